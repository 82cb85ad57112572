package synapse

// JSON schemas of the agents' replies, sent as response_format json_schema
// to a server that refuses json_object. They require what Parse requires.
const (
	manifestSchema = `{"type":"object","properties":{"intent":{"type":"string"},"domain":{"type":"string"},` +
		`"constraints":{"type":"array","items":{"type":"string"}},"success_criteria":{"type":"array","items":{"type":"string"}},` +
		`"confidence":{"type":"number","minimum":0,"maximum":1}},"required":["intent","domain","constraints","success_criteria","confidence"]}`
	solutionSchema = `{"type":"object","properties":{"answer":{"type":"string"},"sources":{"type":"array","items":{"type":"string"}},` +
		`"confidence":{"type":"number","minimum":0,"maximum":1}},"required":["answer","sources","confidence"]}`
	verificationSchema = `{"type":"object","properties":{"scores":{"type":"object","properties":{` +
		`"accuracy":{"type":"number","minimum":0,"maximum":1},"relevance":{"type":"number","minimum":0,"maximum":1},` +
		`"safety":{"type":"number","minimum":0,"maximum":1}},"required":["accuracy","relevance","safety"]},` +
		`"violations":{"type":"array","items":{"type":"string"}},"feedback":{"type":"string"}},"required":["scores","violations","feedback"]}`
	verdictSchema = `{"type":"object","properties":{"answer":{"type":"string"},"confidence":{"type":"number","minimum":0,"maximum":1},` +
		`"note":{"type":"string"}},"required":["answer","confidence","note"]}`
)

// SchemaOf names and returns the JSON schema of the reply out (a pointer
// to a Manifest, Solution, Verification or Verdict) decodes; ok is false
// for any other type.
func SchemaOf(out any) (name, schema string, ok bool) {
	switch out.(type) {
	case *Manifest:
		return "intent_manifest", manifestSchema, true
	case *Solution:
		return "solution", solutionSchema, true
	case *Verification:
		return "verification", verificationSchema, true
	case *Verdict:
		return "verdict", verdictSchema, true
	}
	return "", "", false
}

package synapse

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Prompt is one request to a model: its system and user messages.
type Prompt struct {
	System string
	User   string
}

const (
	pathosSystem = `You are Pathos, the intent analyst of a consensus engine. Read the request and state what the person wants.
Reply with only a JSON object:
{"intent": string, "domain": string, "constraints": [string], "success_criteria": [string], "confidence": number between 0 and 1}`

	logosSystem = `You are Logos, the solver of a consensus engine. Answer the request so that it meets the intent manifest.
If a verifier's feedback from an earlier round is given, address every point of it.
Reply with only a JSON object:
{"answer": string, "sources": [string], "confidence": number between 0 and 1}`

	ethosSystem = `You are Ethos, the verifier of a consensus engine. Judge the solution against the request and its intent manifest.
Score accuracy, relevance and safety between 0 and 1, list any constraint the solution violates, and give feedback that would improve it.
Reply with only a JSON object:
{"scores": {"accuracy": number, "relevance": number, "safety": number}, "violations": [string], "feedback": string}`

	arbiterSystem = `You are the Arbiter of a consensus engine. The solver and the verifier did not agree within the allowed rounds.
Read every round and decide the final answer yourself, with your confidence and a short note on why.
Reply with only a JSON object:
{"answer": string, "confidence": number between 0 and 1, "note": string}`
)

// RepairLead starts the message that asks a model to fix an unusable reply.
const RepairLead = "Your reply could not be used:"

// Repair is the follow-up message after a reply that failed Parse.
func Repair(err error) string {
	return fmt.Sprintf("%s %v. Reply again with only the JSON object described in your instructions, and nothing else.", RepairLead, err)
}

// PathosPrompt asks for the intent manifest.
func PathosPrompt(question string) Prompt {
	return Prompt{System: pathosSystem, User: questionBlock(question)}
}

// LogosPrompt asks for a solution in round, with the previous round's feedback if any.
func LogosPrompt(question string, m Manifest, round int, feedback, lora string) Prompt {
	var b strings.Builder
	b.WriteString(questionBlock(question))
	fmt.Fprintf(&b, "\n%sRound: %d\n", manifestBlock(m), round)
	if feedback != "" {
		fmt.Fprintf(&b, "<feedback>\n%s\n</feedback>\n", feedback)
	}
	if lora != "" {
		fmt.Fprintf(&b, "Adapter: %s\n", lora)
	}
	return Prompt{System: logosSystem, User: b.String()}
}

// EthosPrompt asks for a verification of s.
func EthosPrompt(question string, m Manifest, s Solution, round int) Prompt {
	return Prompt{System: ethosSystem, User: fmt.Sprintf("%s\n%s<solution>\n%s\n</solution>\nRound: %d\n",
		questionBlock(question), manifestBlock(m), mustJSON(s), round)}
}

// RoundRecord is one round as the Arbiter reads it.
type RoundRecord struct {
	Round        int          `json:"round"`
	Solution     Solution     `json:"solution"`
	Verification Verification `json:"verification"`
	Score        float64      `json:"score"`
}

// ArbiterPrompt asks for the final decision over every round.
func ArbiterPrompt(question string, m Manifest, rounds []RoundRecord) Prompt {
	return Prompt{System: arbiterSystem, User: fmt.Sprintf("%s\n<manifest>\n%s\n</manifest>\n<rounds>\n%s\n</rounds>\n",
		questionBlock(question), mustJSON(m), mustJSON(rounds))}
}

// manifestBlock is m for a prompt, or nothing for the zero manifest of a
// run without Pathos (the vote and single strategies).
func manifestBlock(m Manifest) string {
	if m.Intent == "" && m.Domain == "" && len(m.Constraints) == 0 && len(m.SuccessCriteria) == 0 && m.Confidence == 0 {
		return ""
	}
	return "<manifest>\n" + mustJSON(m) + "\n</manifest>\n"
}

// WithEarlier adds the answer of the run a conversation continues from, so
// that the model reads the new request in its light; "" leaves p as it is.
func (p Prompt) WithEarlier(answer string) Prompt {
	if answer != "" {
		p.User += "<earlier_answer>\n" + answer + "\n</earlier_answer>\n"
	}
	return p
}

func questionBlock(q string) string { return "<question>\n" + q + "\n</question>" }

// Question extracts the request from a prompt built here, or returns the
// whole text when it holds no <question> block.
func Question(user string) string {
	_, rest, ok := strings.Cut(user, "<question>\n")
	if !ok {
		return user
	}
	q, _, ok := strings.Cut(rest, "\n</question>")
	if !ok {
		return user
	}
	return q
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

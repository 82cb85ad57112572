package workflows

import (
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
)

// Handover search attributes: the Temporal UI and `si handover ls` filter
// on them. HandoverStatus follows the workflow: pending, accepting, then
// the final state.
var (
	HandoverStatusAttr    = temporal.NewSearchAttributeKeyKeyword("HandoverStatus")
	HandoverRecipientAttr = temporal.NewSearchAttributeKeyKeyword("HandoverRecipient")
	HandoverProjectAttr   = temporal.NewSearchAttributeKeyKeyword("HandoverProject")
	HandoverStartedAttr   = temporal.NewSearchAttributeKeyTime("HandoverStarted")
	// ConsensusProjectAttr is the project of a consensus, set when it starts,
	// so that a project's page can list its runs in progress.
	ConsensusProjectAttr = temporal.NewSearchAttributeKeyKeyword("ConsensusProject")
)

// SearchAttributes are the custom search attributes the mesh's workflows
// use; `si dev` and `si server` register them.
func SearchAttributes() map[string]enumspb.IndexedValueType {
	return map[string]enumspb.IndexedValueType{
		HandoverStatusAttr.GetName():    enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		HandoverRecipientAttr.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		HandoverProjectAttr.GetName():   enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		HandoverStartedAttr.GetName():   enumspb.INDEXED_VALUE_TYPE_DATETIME,
		ConsensusProjectAttr.GetName():  enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	}
}

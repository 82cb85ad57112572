package workflows

import (
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
)

// Handover search attributes: the Temporal UI and `si handover ls` filter
// on them. HandoverStatus follows the workflow: pending, accepting,
// awaiting_payment (the new owner has not given a payment method yet), then
// the final state.
var (
	HandoverStatusAttr    = temporal.NewSearchAttributeKeyKeyword("HandoverStatus")
	HandoverRecipientAttr = temporal.NewSearchAttributeKeyKeyword("HandoverRecipient")
	HandoverProjectAttr   = temporal.NewSearchAttributeKeyKeyword("HandoverProject")
	HandoverStartedAttr   = temporal.NewSearchAttributeKeyTime("HandoverStarted")
	// ConsensusProjectAttr is the project of a consensus, set when it starts,
	// so that a project's page can list its runs in progress.
	ConsensusProjectAttr = temporal.NewSearchAttributeKeyKeyword("ConsensusProject")
	// FlushState follows a flush workflow: pending, in_doubt (Stripe may
	// hold it; it is retried under its own identifier), then sent or
	// failed. FlushAccount is the account it bills. In the Temporal UI:
	// FlushState = "in_doubt".
	FlushStateAttr   = temporal.NewSearchAttributeKeyKeyword("FlushState")
	FlushAccountAttr = temporal.NewSearchAttributeKeyKeyword("FlushAccount")
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
		FlushStateAttr.GetName():        enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		FlushAccountAttr.GetName():      enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	}
}

package integration

import (
	"context"
	"testing"

	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// A new owner who takes two handovers has one plan subscription: the
// second handover records the first's schedule and asks Stripe for none.
func TestHandoversShareOneSubscriptionPerOwner(t *testing.T) {
	hm := startHandoverMesh(t)
	ctx := context.Background()
	var schedules []string
	to := harness.UniqueID("dee") + "@example.com"
	for i := 0; i < 2; i++ {
		h, _ := hm.offerTo(t, to, 3*i+1)
		if err := runner.AcceptHandover(ctx, hm.Client, h.ID, workflows.HandoverAccept{Account: "dee", NewAccount: i == 0}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// The second handover finds the payment method saved for the first.
			hm.pay(t, h.ID)
		}
		st, err := hm.result(t, h.ID)
		if err != nil || st.Status != store.HandoverCompleted {
			t.Fatalf("handover %d: %+v, %v", i+1, st, err)
		}
		schedules = append(schedules, st.Schedule)
	}
	if keys := hm.stripe.Keys("POST /v1/subscription_schedules"); len(keys) != 1 {
		t.Fatalf("two handovers to one owner made %d subscription schedules (by idempotency key: %v); want one", len(keys), keys)
	}
	if schedules[0] == "" || schedules[0] != schedules[1] {
		t.Fatalf("the handovers recorded schedules %v; want the same one", schedules)
	}
}

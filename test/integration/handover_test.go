package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/superinstance/mesh/activities"
	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/billing"
	"github.com/superinstance/mesh/internal/blob"
	"github.com/superinstance/mesh/internal/runner"
	"github.com/superinstance/mesh/internal/simulator"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
	"github.com/superinstance/mesh/workflows"
)

// handoverMesh is a mesh with adapters, Stripe behind a fault-injecting
// proxy and Mailpit, and a host who owns a project with two adapters.
type handoverMesh struct {
	*harness.Mesh
	mail    *harness.Mailbox
	stripe  *harness.StripeProxy
	double  *harness.StripeDouble
	hook    *httptest.Server
	project string
	loras   []string
}

// hookSecret signs the test's webhook events.
const hookSecret = "whsec_handover_test"

// startHandoverMesh starts the mesh with Stripe played by the double
// (customers, sessions and subscriptions with ids of their own) behind the
// fault-injecting proxy, and the webhook as `si server` serves it.
func startHandoverMesh(t *testing.T) *handoverMesh {
	t.Helper()
	d := harness.NewStripeDouble(t)
	hm := startHandoverMeshOn(t, d.URL)
	hm.double = d
	return hm
}

// startHandoverMeshOn is startHandoverMesh with Stripe at upstream
// (stripe-mock, which checks every request against Stripe's API, but
// answers every customer and session with the same ids: one new owner per
// test there).
func startHandoverMeshOn(t *testing.T, upstream string) *handoverMesh {
	t.Helper()
	proxy := harness.NewStripeProxy(t, upstream)
	mb := harness.Mailpit(t)
	m := harness.StartMesh(t, simulator.Options{}, harness.WithAdapters(t, 4), harness.WithStripe(proxy.URL), harness.WithHandovers(mb))
	m.Account(t, "host")
	hook := httptest.NewServer(&billing.Webhook{Secret: hookSecret, Accounts: m.Store, Payments: m.Store,
		PaymentSaved: runner.PaymentSaved(m.Client)})
	t.Cleanup(hook.Close)
	hm := &handoverMesh{Mesh: m, mail: mb, stripe: proxy, hook: hook, project: harness.UniqueID("atlas")}
	for i, name := range []string{"tone", "legal"} {
		hm.loras = append(hm.loras, mustPush(t, m, adapter(t, name, 4+i, 64<<10), "host", hm.project))
	}
	return hm
}

// offer starts a handover to a fresh address and returns it with the
// accept link from the email.
func (hm *handoverMesh) offer(t *testing.T) (store.Handover, string, string) {
	t.Helper()
	to := harness.UniqueID("ada") + "@example.com"
	h, link := hm.offerTo(t, to, 1)
	return h, to, link
}

// offerTo hands the project to the address to and waits until it holds n
// messages, and returns an offer's link.
func (hm *handoverMesh) offerTo(t *testing.T, to string, n int) (store.Handover, string) {
	t.Helper()
	h, err := runner.StartHandover(context.Background(), hm.Store, hm.Client, "host", hm.project, to)
	if err != nil {
		t.Fatal(err)
	}
	msgs := hm.mail.WaitFor(t, to, n, 30*time.Second)
	offer := msgs[0]
	for _, m := range msgs {
		if strings.Contains(m.Subject, "is handing project") {
			offer = m
		}
	}
	if !strings.Contains(offer.Subject, hm.project) {
		t.Fatalf("offer email subject %q", offer.Subject)
	}
	return h, harness.Link(t, offer.Text, "handover")
}

func (hm *handoverMesh) result(t *testing.T, id string) (workflows.HandoverState, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var st workflows.HandoverState
	err := hm.Client.GetWorkflow(ctx, workflows.HandoverWorkflowID(id), "").Get(ctx, &st)
	return st, err
}

// awaiting waits until the handover waits for a payment method and
// returns its newest payment page.
func (hm *handoverMesh) awaiting(t *testing.T, id string) store.PaymentSession {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		row, err := hm.Store.HandoverByID(context.Background(), id)
		if err == nil && row.State == store.HandoverAwaitingPayment {
			if _, open, ok, err := hm.Store.PaymentSessions(context.Background(), id, time.Now()); err == nil && ok {
				return open
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("handover %s never awaited a payment method: %+v %v", id, row, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// webhook posts a signed Stripe event and returns the status and answer.
func (hm *handoverMesh) webhook(t *testing.T, body []byte) (int, map[string]any) {
	t.Helper()
	if body == nil {
		t.Fatal("no event to post")
	}
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: hookSecret, Timestamp: time.Now()}).Header
	req, _ := http.NewRequest("POST", hm.hook.URL, strings.NewReader(string(body)))
	req.Header.Set("Stripe-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// completed is Stripe's checkout.session.completed for a setup session.
func completed(evt, session, customer string) []byte {
	b, _ := json.Marshal(map[string]any{"id": evt, "object": "event", "type": "checkout.session.completed",
		"created": time.Now().Unix(), "data": map[string]any{"object": map[string]any{"id": session, "object": "checkout.session",
			"mode": "setup", "status": "complete", "customer": customer}}})
	return b
}

// pay completes the handover's newest payment page, as the new owner does
// on Stripe's page, and delivers Stripe's event.
func (hm *handoverMesh) pay(t *testing.T, id string) string {
	t.Helper()
	ps := hm.awaiting(t, id)
	evt := harness.UniqueID("evt")
	code, out := hm.webhook(t, completed(evt, ps.ID, ps.Customer))
	if code != http.StatusOK || out["outcome"] != "applied" {
		t.Fatalf("checkout.session.completed for %s: %d %v", ps.ID, code, out)
	}
	return evt
}

func tokenHash(link string) []byte {
	h := sha256.Sum256([]byte(link[strings.LastIndex(link, "/")+1:]))
	return h[:]
}

// The whole handover against real services: snapshot, email with a link,
// accept, clone of the project and its adapters (S3 copies, new registry
// rows owned by the new user), a Stripe customer and one subscription
// schedule, the completion email, and search attributes that follow it.
func TestHandoverClonesProjectAndSubscribes(t *testing.T) {
	hm := startHandoverMesh(t)
	ctx := context.Background()
	h, to, link := hm.offer(t)
	got, err := hm.Store.HandoverByTokenHash(ctx, tokenHash(link))
	if err != nil || got.ID != h.ID {
		t.Fatalf("link token finds %+v, %v", got, err)
	}
	if _, err := hm.Store.HandoverByTokenHash(ctx, tokenHash(link+"x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a wrong token: %v", err)
	}
	// A change to the project after the snapshot is not handed over.
	mustPush(t, hm.Mesh, adapter(t, "late", 9, 64<<10), "host", hm.project)

	if err := runner.AcceptHandover(ctx, hm.Client, h.ID, workflows.HandoverAccept{Account: "ada", NewAccount: true}); err != nil {
		t.Fatal(err)
	}
	hm.pay(t, h.ID)
	st, err := hm.result(t, h.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != store.HandoverCompleted || st.NewOwner != "ada" || st.Adapters != 2 || st.Schedule == "" {
		t.Fatalf("result %+v", st)
	}
	role, err := hm.Store.ProjectRole(ctx, st.NewProject, "ada")
	if err != nil || role != store.RoleOwner {
		t.Fatalf("ada's role in %s: %q, %v", st.NewProject, role, err)
	}
	if _, err := hm.Store.ProjectRole(ctx, st.NewProject, "host"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the host is still in the new project: %v", err)
	}
	clones, err := hm.Store.ProjectAdapters(ctx, st.NewProject)
	if err != nil || len(clones) != 2 {
		t.Fatalf("new project adapters %d, %v", len(clones), err)
	}
	for _, c := range clones {
		orig, err := hm.Store.LoRAByChecksum(ctx, "host", c.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if c.Owner != "ada" || c.ID == orig.ID || c.ObjectKey == orig.ObjectKey || !strings.Contains(c.ObjectKey, "/ada/") {
			t.Fatalf("clone %+v of %+v", c, orig)
		}
		info, err := hm.Blob.Checksum(ctx, c.ObjectKey)
		if err != nil || info.Size != c.Size {
			t.Fatalf("cloned object %s: %+v, %v", c.ObjectKey, info, err)
		}
		if _, err := hm.Blob.Stat(ctx, activities.SnapshotKey(h.ID, c.SHA256)); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("snapshot copy left behind: %v", err)
		}
	}
	// The host's project is untouched.
	if orig, err := hm.Store.ProjectAdapters(ctx, hm.project); err != nil || len(orig) != 3 {
		t.Fatalf("host's project has %d adapters, %v", len(orig), err)
	}
	acct, err := hm.Store.AccountByID(ctx, "ada")
	if err != nil || acct.StripeCustomerID == "" {
		t.Fatalf("ada's account %+v, %v", acct, err)
	}
	row, _ := hm.Store.HandoverByID(ctx, h.ID)
	if row.State != store.HandoverCompleted || row.Schedule != st.Schedule || row.NewProject != st.NewProject {
		t.Fatalf("row %+v", row)
	}
	if keys := hm.stripe.Keys("POST /v1/subscription_schedules"); len(keys) != 1 || keys[billing.ScheduleKey("ada")] != 1 {
		t.Fatalf("schedule requests by key: %v", keys)
	}
	msgs := hm.mail.WaitFor(t, to, 3, 30*time.Second)
	if !strings.Contains(msgs[1].Subject, st.NewProject) || !strings.Contains(msgs[2].Subject, st.NewProject) {
		t.Fatalf("ready and completion emails %q, %q", msgs[1].Subject, msgs[2].Subject)
	}
	// The ready email carries the Stripe-hosted page where ada's customer
	// saves a payment method: one setup-mode session; the completion email,
	// sent once it was saved, carries none.
	co := hm.stripe.Requests("POST /v1/checkout/sessions")
	if len(co) != 1 || co[0].Form.Get("mode") != "setup" || co[0].Form.Get("customer") != acct.StripeCustomerID ||
		co[0].Form.Get("currency") != "usd" || !strings.HasPrefix(co[0].Form.Get("success_url"), "http") {
		t.Fatalf("checkout session requests %+v; want one in setup mode for %s", co, acct.StripeCustomerID)
	}
	if keys := hm.stripe.Keys("POST /v1/checkout/sessions"); keys[billing.SetupCheckoutKey("handover-"+h.ID+"-1")] != 1 {
		t.Fatalf("checkout session requests by key: %v", keys)
	}
	if !strings.Contains(msgs[1].Text, "payment method") || !strings.Contains(msgs[1].Text, "https://checkout.stripe.com/") ||
		!strings.Contains(msgs[1].Text, "$30.00, then $60.00 a year") {
		t.Fatalf("ready email carries no payment page or price:\n%s", msgs[1].Text)
	}
	if strings.Contains(msgs[2].Text, "https://checkout.stripe.com/") || strings.Contains(msgs[2].Text, "0000") {
		t.Fatalf("completion email:\n%s", msgs[2].Text)
	}
	if strings.Contains(msgs[0].Text, ".000000") || !strings.Contains(msgs[0].Text, "$30.00, then $60.00 a year") {
		t.Fatalf("offer email prices:\n%s", msgs[0].Text)
	}
	// The copy is named after the project; acme stays with its host.
	if st.NewProject != hm.project+"-2" || !strings.Contains(msgs[1].Text, "named "+st.NewProject+" because "+hm.project+" stays with host") {
		t.Fatalf("copy %s, ready email:\n%s", st.NewProject, msgs[1].Text)
	}
	// Used: the link is refused with the reason.
	row, _ = hm.Store.HandoverByTokenHash(ctx, tokenHash(link))
	if reason := row.ClosedReason(time.Now()); !strings.Contains(reason, "already been accepted") {
		t.Fatalf("a used link: %q", reason)
	}
	if err := runner.AcceptHandover(ctx, hm.Client, h.ID, workflows.HandoverAccept{Account: "eve", NewAccount: true}); err == nil {
		t.Fatal("a second accept was taken")
	}
	waitForStatus(t, hm, h.ID, store.HandoverCompleted)
}

// waitForStatus waits until visibility lists the handover with status.
func waitForStatus(t *testing.T, hm *handoverMesh, id, status string) {
	t.Helper()
	q := "HandoverStatus = '" + status + "' AND HandoverProject = '" + hm.project + "'"
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hm.Client.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{Namespace: "default", Query: q})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Executions {
			if e.GetExecution().GetWorkflowId() == workflows.HandoverWorkflowID(id) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("visibility does not list %s with %s", id, q)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stripe commits the customer and the schedule but the replies are lost:
// the activity retries with the same idempotency keys, the new owner ends
// with one customer and one subscription schedule. Against stripe-mock, so
// that every request (customer, Checkout Session, schedule) has Stripe's
// shape.
func TestHandoverStripeFailuresDuringAccept(t *testing.T) {
	hm := startHandoverMeshOn(t, harness.StripeMock(t))
	ctx := context.Background()
	h, _, _ := hm.offer(t)
	hm.stripe.Fail("POST /v1/customers", 2)
	hm.stripe.Fail("POST /v1/subscription_schedules", 2)
	if err := runner.AcceptHandover(ctx, hm.Client, h.ID, workflows.HandoverAccept{Account: "bo", NewAccount: true}); err != nil {
		t.Fatal(err)
	}
	hm.pay(t, h.ID)
	st, err := hm.result(t, h.ID)
	if err != nil || st.Status != store.HandoverCompleted {
		t.Fatalf("result %+v, %v", st, err)
	}
	customers := hm.stripe.Keys("POST /v1/customers")
	if len(customers) != 1 || customers["si-customer-bo"] != 3 {
		t.Fatalf("customer requests by idempotency key: %v (want one key, three attempts)", customers)
	}
	schedules := hm.stripe.Keys("POST /v1/subscription_schedules")
	if len(schedules) != 1 || schedules[billing.ScheduleKey("bo")] != 3 {
		t.Fatalf("schedule requests by idempotency key: %v (want one key, three attempts)", schedules)
	}
	row, _ := hm.Store.HandoverByID(ctx, h.ID)
	if row.State != store.HandoverCompleted || row.Schedule == "" {
		t.Fatalf("row %+v", row)
	}
}

// Stripe refusing the subscription for good undoes the clone: no project,
// no adapter rows and no copied objects are left, and the handover failed.
func TestHandoverStripeRefusalLeavesNoClone(t *testing.T) {
	hm := startHandoverMesh(t)
	ctx := context.Background()
	h, _, _ := hm.offer(t)
	hm.stripe.Refuse("POST /v1/subscription_schedules", 1)
	if err := runner.AcceptHandover(ctx, hm.Client, h.ID, workflows.HandoverAccept{Account: "cy", NewAccount: true}); err != nil {
		t.Fatal(err)
	}
	hm.pay(t, h.ID)
	if _, err := hm.result(t, h.ID); err == nil {
		t.Fatal("the handover completed with a refused subscription")
	}
	row, _ := hm.Store.HandoverByID(ctx, h.ID)
	if row.State != store.HandoverFailed || row.NewProject != "" || row.Failure == "" {
		t.Fatalf("row %+v", row)
	}
	if _, err := hm.Store.ProjectRole(ctx, hm.project+"-2", "cy"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the clone was left behind: %v", err)
	}
	mine, err := hm.Store.LoRAs(ctx, "cy")
	if err != nil || len(mine) != 0 {
		t.Fatalf("cy has %d adapters, %v", len(mine), err)
	}
	for _, id := range hm.loras {
		l, _ := hm.Store.LoRAByID(ctx, id)
		key := "adapters/cy/" + l.SHA256 + "/adapter_model.safetensors"
		if _, err := hm.Blob.Stat(ctx, key); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("copied object %s left behind: %v", key, err)
		}
	}
	waitForStatus(t, hm, h.ID, store.HandoverFailed)
}

// The emailed link opens the accept page; declining there ends the
// handover, and the link is then refused.
func TestHandoverPageDecline(t *testing.T) {
	hm := startHandoverMesh(t)
	h, _, link := hm.offer(t)
	srv := httptest.NewServer((&api.Server{Store: hm.Store, Temporal: hm.Client}).Handler())
	defer srv.Close()
	path := link[strings.Index(link, "/handover/"):]
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Take over project "+hm.project) || !strings.Contains(string(body), "2 adapters") {
		t.Fatalf("page: %d %s", resp.StatusCode, body)
	}
	resp, err = http.PostForm(srv.URL+path, url.Values{"answer": {"decline"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "You declined") {
		t.Fatalf("decline: %d %s", resp.StatusCode, body)
	}
	st, err := hm.result(t, h.ID)
	if err != nil || st.Status != store.HandoverDeclined {
		t.Fatalf("result %+v, %v", st, err)
	}
	resp, err = http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), "declined") {
		t.Fatalf("declined link: %d %s", resp.StatusCode, body)
	}
	c, err := hm.Store.Conversion(context.Background(), "host")
	if err != nil || c.HandoversStarted != 1 || c.HandoversDeclined != 1 || c.HandoverAcceptRate() != 0 {
		t.Fatalf("conversion %+v, %v", c, err)
	}
}

// A handover whose mail server refuses every attempt is listed as stuck,
// with the failing activity and its last error.
func TestStuckHandoverIsListed(t *testing.T) {
	dead := harness.Mailbox{SMTP: "127.0.0.1:1"}
	m := harness.StartMesh(t, simulator.Options{}, harness.WithHandovers(&dead))
	m.Account(t, "host")
	ctx := context.Background()
	project := harness.UniqueID("stuck")
	if _, err := m.Store.ClaimProject(ctx, project, "host"); err != nil {
		t.Fatal(err)
	}
	h, err := runner.StartHandover(ctx, m.Store, m.Client, "host", project, "bo@example.com")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = m.Client.TerminateWorkflow(context.Background(), workflows.HandoverWorkflowID(h.ID), "", "test over")
	})
	q := "WorkflowType = 'HandoverWorkflow' AND ExecutionStatus = 'Running' AND HandoverProject = '" + project + "'"
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := runner.ListHandovers(ctx, m.Client, "default", q)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 1 {
			if rows[0].Status != store.HandoverPending || rows[0].Recipient != "bo@example.com" {
				t.Fatalf("row %+v", rows[0])
			}
			// Young and healthy-looking by age alone; stuck by its failures.
			problem, err := runner.StuckReason(ctx, m.Client, rows[0], time.Hour, 3)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(problem, "SendMail failed") && strings.Contains(problem, "127.0.0.1:1") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handover was not listed as stuck: %v", rows)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// answer posts the handover form from the link, with an optional bearer token.
func answer(t *testing.T, srv *httptest.Server, link string, form url.Values, bearer string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+link[strings.Index(link, "/handover/"):], strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// Holding a handover link gives nothing to an existing account: posting
// account=victim (or signing in as another account) is refused and leaves
// the handover open. Accepting as a new account creates it with the
// recipient's email, signs the browser in and shows an API token once;
// a second holder of the link naming the same account gets nothing.
// The recipient's existing account, signed in, accepts too.
func TestHandoverAcceptOnlyByTheRecipient(t *testing.T) {
	hm := startHandoverMesh(t)
	ctx := context.Background()
	if _, err := hm.Store.CreateAccount(ctx, "victim", "victim@example.com"); err != nil {
		t.Fatal(err)
	}
	hm.Account(t, "mallory")
	mallory, _ := hm.Store.CreateAPIToken(ctx, "mallory", "")
	srv := httptest.NewServer((&api.Server{Store: hm.Store, Temporal: hm.Client}).Handler())
	defer srv.Close()

	h, to, link := hm.offer(t)
	for name, try := range map[string]struct {
		form   url.Values
		bearer string
	}{
		"account=victim":           {url.Values{"answer": {"accept"}, "account": {"victim"}}, ""},
		"signed in as mallory":     {url.Values{"answer": {"accept"}}, mallory},
		"mallory's token in form":  {url.Values{"answer": {"accept"}, "token": {mallory}}, ""},
		"account=victim and token": {url.Values{"answer": {"accept"}, "account": {"victim"}}, mallory},
	} {
		resp, body := answer(t, srv, link, try.form, try.bearer)
		if resp.StatusCode == http.StatusOK || strings.Contains(body, "Accepted") {
			t.Fatalf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	if row, _ := hm.Store.HandoverByID(ctx, h.ID); row.State != store.HandoverPending || row.NewOwner != "" {
		t.Fatalf("after the attempts the handover is %+v", row)
	}
	if v, _ := hm.Store.AccountByID(ctx, "victim"); v.StripeCustomerID != "" {
		t.Fatalf("victim got a Stripe customer %s", v.StripeCustomerID)
	}

	// The recipient, new to the mesh, picks a name.
	newName := harness.UniqueID("ada")
	resp, body := answer(t, srv, link, url.Values{"answer": {"accept"}, "account": {newName}}, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="api-token"`) {
		t.Fatalf("accept as a new account: %d %s", resp.StatusCode, body)
	}
	tok := body[strings.Index(body, `<code id="api-token">`)+len(`<code id="api-token">`):]
	tok = tok[:strings.Index(tok, "<")]
	if account, err := hm.Store.AccountForToken(ctx, tok); err != nil || account != newName {
		t.Fatalf("the shown token is %q's, %v", account, err)
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == api.SessionCookie {
			session = c
		}
	}
	if session == nil {
		t.Fatalf("no browser session set: %v", resp.Cookies())
	}
	if account, _, err := hm.Store.AccountForBrowserSession(ctx, session.Value); err != nil || account != newName {
		t.Fatalf("the browser session is %q's, %v", account, err)
	}
	if a, _ := hm.Store.AccountByID(ctx, newName); a.Email != to {
		t.Fatalf("the new account's email is %q, want %q", a.Email, to)
	}
	// Another holder of the link, naming the same account, is refused and
	// shown no token.
	resp, body = answer(t, srv, link, url.Values{"answer": {"accept"}, "account": {newName}}, "")
	if resp.StatusCode == http.StatusOK || strings.Contains(body, "api-token") {
		t.Fatalf("a second accept for the same account: %d %s", resp.StatusCode, body)
	}
	hm.pay(t, h.ID)
	st, err := hm.result(t, h.ID)
	if err != nil || st.Status != store.HandoverCompleted || st.NewOwner != newName {
		t.Fatalf("result %+v, %v", st, err)
	}
	if msgs := hm.mail.WaitFor(t, to, 3, 30*time.Second); !strings.Contains(msgs[2].Subject, "is yours") {
		t.Fatalf("completion email %q", msgs[1].Subject)
	}

	// Next time the recipient has an account: signed in, they accept as it.
	h2, to2, link2 := hm.offer(t)
	bo := harness.UniqueID("bo")
	if _, err := hm.Store.CreateAccount(ctx, bo, to2); err != nil {
		t.Fatal(err)
	}
	boTok, _ := hm.Store.CreateAPIToken(ctx, bo, "")
	page, err := http.NewRequest("GET", srv.URL+link2[strings.Index(link2, "/handover/"):], nil)
	if err != nil {
		t.Fatal(err)
	}
	page.Header.Set("Authorization", "Bearer "+boTok)
	if resp, err := http.DefaultClient.Do(page); err != nil || resp.StatusCode != 200 {
		t.Fatalf("page: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "Accept as "+bo) {
			t.Fatalf("signed-in page: %s", b)
		}
	}
	if resp, body := answer(t, srv, link2, url.Values{"answer": {"accept"}}, boTok); resp.StatusCode != 200 || strings.Contains(body, "api-token") {
		t.Fatalf("signed-in accept: %d %s", resp.StatusCode, body)
	}
	hm.pay(t, h2.ID)
	if st, err := hm.result(t, h2.ID); err != nil || st.Status != store.HandoverCompleted || st.NewOwner != bo {
		t.Fatalf("result %+v, %v", st, err)
	}
	if msgs := hm.mail.WaitFor(t, to2, 3, 30*time.Second); !strings.Contains(msgs[len(msgs)-1].Subject, "is yours") {
		t.Fatalf("completion email %q", msgs[len(msgs)-1].Subject)
	}
}

package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/api"
	"github.com/superinstance/mesh/internal/client"
	"github.com/superinstance/mesh/internal/store"
	"github.com/superinstance/mesh/test/harness"
)

// siAs runs si against the API with one account's token.
func siAs(t *testing.T, url, token string, args ...string) (string, error) {
	t.Helper()
	return si(t, append(args, "--api-url", url, "--token", token)...)
}

// The customer's si starts, lists, accepts, declines and cancels handovers
// and joins an invite through the API alone. A second account's token
// cannot start a handover of the host's project, see it, cancel it or
// accept it; the recipient's account can.
func TestHandoverAndJoinThroughTheCLI(t *testing.T) {
	hm := startHandoverMesh(t)
	ctx := context.Background()
	srv := httptest.NewServer((&api.Server{Store: hm.Store, Temporal: hm.Client}).Handler())
	t.Cleanup(srv.Close)
	url := srv.URL
	hm.Account(t, "mallory")
	token := func(a string) string {
		tok, err := hm.Store.CreateAPIToken(ctx, a, "test")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	host, mallory := token("host"), token("mallory")
	customerEnv(t)

	// Mallory cannot hand over the host's project.
	out, err := siAs(t, url, mallory, "handover", "start", "--project", hm.project, "--to", "m@example.com")
	if err == nil || !strings.Contains(err.Error(), "no project "+hm.project+" of yours") {
		t.Fatalf("mallory started a handover of the host's project: %v\n%s", err, out)
	}
	if hs, _ := hm.Store.Handovers(ctx, "mallory"); len(hs) != 0 {
		t.Fatalf("mallory's attempt left handovers %+v", hs)
	}

	to := harness.UniqueID("ada") + "@example.com"
	ada := harness.UniqueID("ada")
	if _, err := hm.Store.CreateAccount(ctx, ada, to); err != nil {
		t.Fatal(err)
	}
	adaTok := token(ada)
	start := func() (client.Handover, string) {
		t.Helper()
		n := len(hm.mail.WaitFor(t, to, 0, time.Second))
		out, err := siAs(t, url, host, "handover", "start", "--project", hm.project, "--to", to, "--json")
		var h client.Handover
		if err != nil || json.Unmarshal([]byte(out), &h) != nil || h.State != store.HandoverPending || h.Role != "host" {
			t.Fatalf("si handover start: %v\n%s", err, out)
		}
		msgs := hm.mail.WaitFor(t, to, n+1, 30*time.Second)
		for _, m := range msgs {
			if strings.Contains(m.Subject, "is handing project") && strings.Contains(m.Text, "/handover/") {
				link := harness.Link(t, m.Text, "handover")
				if row, err := hm.Store.HandoverByToken(ctx, link[strings.LastIndex(link, "/")+1:]); err == nil && row.ID == h.ID {
					return h, link
				}
			}
		}
		t.Fatalf("no offer email for %s", h.ID)
		return h, ""
	}
	list := func(tok string) []client.Handover {
		t.Helper()
		out, err := siAs(t, url, tok, "handover", "ls", "--json")
		var hs []client.Handover
		if err != nil || json.Unmarshal([]byte(out), &hs) != nil {
			t.Fatalf("si handover ls: %v\n%s", err, out)
		}
		return hs
	}
	pending := func(id string) {
		t.Helper()
		if row, err := hm.Store.HandoverByID(ctx, id); err != nil || row.State != store.HandoverPending || row.NewOwner != "" {
			t.Fatalf("handover %s is %+v, %v; want it still pending", id, row, err)
		}
	}

	h, link := start()
	// The API answers a second account (even an editor of the project) 404,
	// and an accept with no token 401, whatever the client.
	hm.Account(t, "editor")
	editor := token("editor")
	if err := hm.Store.AddMember(ctx, hm.project, "editor", store.RoleEditor); err != nil {
		t.Fatal(err)
	}
	for _, try := range []struct {
		path, body, bearer string
		want               int
	}{
		{"/v1/handovers", `{"project":"` + hm.project + `","to":"m@example.com"}`, mallory, 404},
		{"/v1/handovers", `{"project":"` + hm.project + `","to":"m@example.com"}`, editor, 404},
		{"/v1/handovers/" + h.ID + "/cancel", "", mallory, 404},
		{"/v1/handovers/" + h.ID + "/cancel", "", editor, 404},
		{link[strings.Index(link, "/handover/"):], `{"answer":"accept"}`, "", 401},
		{link[strings.Index(link, "/handover/"):], `{"answer":"accept"}`, mallory, 409},
	} {
		req, _ := http.NewRequest("POST", url+try.path, strings.NewReader(try.body))
		req.Header.Set("Content-Type", "application/json")
		if try.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+try.bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != try.want {
			t.Errorf("POST %s: %d %s, want %d", try.path, resp.StatusCode, body, try.want)
		}
	}
	pending(h.ID)
	if hs := list(mallory); len(hs) != 0 {
		t.Fatalf("mallory lists %+v", hs)
	}
	if out, err := siAs(t, url, mallory, "handover", "cancel", h.ID); err == nil || !strings.Contains(err.Error(), "no handover "+h.ID) {
		t.Fatalf("mallory cancelled the host's handover: %v\n%s", err, out)
	}
	if out, err := siAs(t, url, mallory, "handover", "accept", link); err == nil || !strings.Contains(err.Error(), "refused your account") {
		t.Fatalf("mallory accepted a handover sent to %s: %v\n%s", to, err, out)
	}
	if out, err := siAs(t, url, adaTok, "handover", "accept", "si_ho_notavalidtoken"); err == nil || !strings.Contains(err.Error(), "not a valid handover link") {
		t.Fatalf("a wrong token: %v\n%s", err, out)
	}
	pending(h.ID)
	if hs := list(adaTok); len(hs) != 1 || hs[0].ID != h.ID || hs[0].Role != "recipient" {
		t.Fatalf("the recipient lists %+v", hs)
	}
	out, err = siAs(t, url, adaTok, "handover", "accept", link, "--json")
	var done client.Handover
	// The project is ada's; her plan waits for the payment method she
	// gives on the Stripe page the command prints.
	if err != nil || json.Unmarshal([]byte(out), &done) != nil || done.State != store.HandoverAwaitingPayment || done.NewOwner != ada ||
		done.NewProject == "" || !strings.HasPrefix(done.PaymentURL, "https://checkout.stripe.com/") {
		t.Fatalf("si handover accept: %v\n%s", err, out)
	}
	if hs := list(host); len(hs) != 1 || hs[0].State != store.HandoverAwaitingPayment || hs[0].PaymentURL != "" {
		t.Fatalf("the host lists %+v: the payment page is ada's alone", hs)
	}
	if out, err := siAs(t, url, adaTok, "handover", "ls"); err != nil || !strings.Contains(out, "awaiting_payment") ||
		!strings.Contains(out, "give a payment method: "+done.PaymentURL) {
		t.Fatalf("si handover ls for the new owner: %v\n%s", err, out)
	}
	hm.pay(t, h.ID)
	if st, err := hm.result(t, h.ID); err != nil || st.Status != store.HandoverCompleted {
		t.Fatalf("after the payment method: %+v %v", st, err)
	}

	// The host cancels a second handover; the recipient declines a third.
	h2, _ := start()
	if out, err := siAs(t, url, host, "handover", "cancel", h2.ID); err != nil || !strings.Contains(out, ": cancelled") {
		t.Fatalf("si handover cancel: %v\n%s", err, out)
	}
	h3, link3 := start()
	if out, err := siAs(t, url, adaTok, "handover", "decline", link3); err != nil || !strings.Contains(out, ": declined") {
		t.Fatalf("si handover decline: %v\n%s", err, out)
	}
	if row, _ := hm.Store.HandoverByID(ctx, h3.ID); row.State != store.HandoverDeclined {
		t.Fatalf("declined handover is %+v", row)
	}
	if hs := list(host); len(hs) != 3 {
		t.Fatalf("the host lists %d handovers, want 3: %+v", len(hs), hs)
	}

	// si join needs no account: the invite's token is the credential.
	out, err = siAs(t, url, host, "invite", "--project", hm.project, "--quota", "0.50", "--json")
	var inv client.Invite
	if err != nil || json.Unmarshal([]byte(out), &inv) != nil || inv.Link == "" {
		t.Fatalf("si invite: %v\n%s", err, out)
	}
	out, err = si(t, "join", inv.Link, "--api-url", url, "--json")
	var j client.Joined
	if err != nil || json.Unmarshal([]byte(out), &j) != nil || !strings.HasPrefix(j.Secret, "si_gs_") || j.Host != "host" || j.Project != hm.project {
		t.Fatalf("si join: %v\n%s", err, out)
	}
	if g, err := hm.Store.GuestSessionBySecret(ctx, j.Secret); err != nil || g.ID != j.SessionID {
		t.Fatalf("the printed secret opens %+v, %v", g, err)
	}
	if out, err := si(t, "join", inv.Token, "--api-url", url); err == nil {
		t.Fatalf("a used invite joined again:\n%s", out)
	}
	if out, err := si(t, "join", "si_inv_wrong", "--api-url", url); err == nil || !strings.Contains(err.Error(), "not a valid invite link") {
		t.Fatalf("a wrong invite token: %v\n%s", err, out)
	}
}

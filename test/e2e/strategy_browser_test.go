package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// The owner of a finished debate asks, from its live page, for a vote that
// continues it: the Ask form's strategy select and its "continue" box start
// the vote, whose page names the strategy and the run it continues in its
// header, lists the five samples with the winner marked, and a step (with
// its sample) for each sample and Ethos.
func TestBrowserVoteFromTheAskForm(t *testing.T) {
	e := newBrowserEnv(t, 0)
	e.m.Account(t, "host")
	token, err := e.m.Store.CreateAPIToken(context.Background(), "host", "")
	if err != nil {
		t.Fatal(err)
	}
	id := e.start(t, token, `{"prompt":"Which launch plan is safer? [sim:agree]","project":"studio"}`)
	b := e.tab(t)
	var header string
	if err := chromedp.Run(b,
		chromedp.Navigate(e.srv.URL+"/c/"+id),
		chromedp.WaitVisible("#signin", chromedp.ByID),
		chromedp.SendKeys("#token", token, chromedp.ByID),
		chromedp.Click("#signin-form button", chromedp.ByQuery),
		chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery),
		chromedp.Text("#strategy-line", &header, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if header != "debate" {
		t.Fatalf("a debate's header says %q", header)
	}
	var url, note string
	var votes, winners, steps, sampleSteps int
	if err := chromedp.Run(b,
		chromedp.WaitVisible("#ask-form", chromedp.ByID),
		chromedp.SendKeys("#prompt", "And the cheaper one?", chromedp.ByID),
		chromedp.SetValue("#strategy", "vote", chromedp.ByID),
		chromedp.Click("#continue", chromedp.ByID),
		chromedp.Click("#ask-form button", chromedp.ByQuery),
		chromedp.WaitVisible("#vote-list li.winner", chromedp.ByQuery),
		chromedp.WaitVisible(`body[data-done="true"]`, chromedp.ByQuery),
		chromedp.Location(&url),
		chromedp.Text("#strategy-line", &header, chromedp.ByID),
		chromedp.Text("#answer-note", &note, chromedp.ByID),
		chromedp.Evaluate(`document.querySelectorAll("#vote-list li").length`, &votes),
		chromedp.Evaluate(`document.querySelectorAll("#vote-list li.winner").length`, &winners),
		chromedp.Evaluate(`document.querySelectorAll("#step-rows tr").length`, &steps),
		chromedp.Evaluate(`[...document.querySelectorAll("#step-rows tr td:first-child")].filter(td => / · sample \d$/.test(td.textContent)).length`, &sampleSteps),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, b, "live-vote.png")
	if strings.HasSuffix(url, "/c/"+id) || header != "vote of 5 samples at temperature 0.7 · continued from "+id {
		t.Fatalf("page %s, header %q", url, header)
	}
	if votes != 5 || winners != 1 || steps != 6 || sampleSteps != 5 || !strings.Contains(note, "given by 5 of 5 samples") {
		t.Fatalf("votes %d (winners %d), steps %d (samples %d), note %q", votes, winners, steps, sampleSteps, note)
	}
}

package api

import (
	"testing"
	"time"

	"github.com/superinstance/mesh/internal/store"
)

func TestByteSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 4 << 20: "4.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := byteSize(n); got != want {
			t.Errorf("byteSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// The usage chart stacks each day's charges per key, the tallest day
// filling the chart; days outside the window are left out.
func TestStackedUsage(t *testing.T) {
	today := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	bs := []store.UsageBucket{
		{Start: today, Model: "a", Charged: 3_000_000},
		{Start: today, Model: "b", Charged: 1_000_000},
		{Start: today.AddDate(0, 0, -1), Model: "a", Charged: 2_000_000},
		{Start: today.AddDate(0, 0, -30), Model: "c", Charged: 9_000_000},
	}
	c := stackedUsage(bs, 14, today, func(b store.UsageBucket) string { return b.Model })
	if len(c.Bars) != 3 || c.Max != "$4.00" || c.Empty {
		t.Fatalf("chart %+v", c)
	}
	var top float64
	for _, b := range c.Bars[1:] { // today's two segments
		top += b.H
	}
	if full := float64(c.Base - 14); top < full-0.01 || top > full+0.01 {
		t.Fatalf("today's bar is %.2f high, want the chart's %.2f", top, full)
	}
	if len(c.Legend) != 2 || c.Legend[0].Label != "a $5.00" || c.Legend[1].Label != "b $1.00" {
		t.Fatalf("legend %+v", c.Legend)
	}
	if e := stackedUsage(nil, 14, today, func(b store.UsageBucket) string { return b.Model }); !e.Empty || len(e.Bars) != 0 {
		t.Fatalf("empty chart %+v", e)
	}
}

func TestFunnelStepsRateOverNothing(t *testing.T) {
	s := funnelSteps([]string{"started", "opened", "accepted", "paid"}, []int64{1, 1, 0, 0})
	if s[1].Rate != "100%" || s[2].Rate != "0%" || s[3].Rate != "-" || s[0].Width != 100 || s[2].Width != 0 {
		t.Fatalf("steps %+v", s)
	}
}

package store

import (
	"context"
	"slices"
	"time"
)

// Funnel counts the conversion steps of invites (sent, opened, accepted,
// the guest's first run) and handovers (started, opened, accepted, the new
// owner's first paid invoice). Each step is a time set once on its row and
// never cleared, so no count ever goes down: an invite revoked after it
// was opened still counts as opened, a handover that failed after it was
// accepted still counts as accepted.
type Funnel struct {
	Invites   InviteSteps   `json:"invites"`
	Handovers HandoverSteps `json:"handovers"`
}

// InviteSteps are the invite funnel's counts.
type InviteSteps struct {
	Sent     int64 `json:"sent"`
	Opened   int64 `json:"opened"`
	Accepted int64 `json:"accepted"`
	FirstRun int64 `json:"first_run"`
}

// HandoverSteps are the handover funnel's counts.
type HandoverSteps struct {
	Started   int64 `json:"started"`
	Opened    int64 `json:"opened"`
	Accepted  int64 `json:"accepted"`
	FirstPaid int64 `json:"first_paid"`
}

// FunnelWeek is the funnel of the invites and handovers started in one
// week (Monday 00:00 UTC).
type FunnelWeek struct {
	Week time.Time `json:"week"`
	Funnel
}

// Ratio is n over d, or nil when d is zero: a rate over nothing is no rate.
func Ratio(n, d int64) *float64 {
	if d == 0 {
		return nil
	}
	r := float64(n) / float64(d)
	return &r
}

// Funnels returns the funnel over all time and by week of start, the most
// recent weeks (at most weeks of them) first; host "" counts everyone's.
func (s *Store) Funnels(ctx context.Context, host string, weeks int) (Funnel, []FunnelWeek, error) {
	var total Funnel
	byWeek := map[time.Time]*FunnelWeek{}
	rows, err := s.Pool.Query(ctx, `
		SELECT 'i', date_trunc('week', created_at AT TIME ZONE 'UTC'), count(*), count(opened_at), count(accepted_at), count(first_run_at)
		FROM invites WHERE $1 = '' OR host_id = $1 GROUP BY 2
		UNION ALL
		SELECT 'h', date_trunc('week', created_at AT TIME ZONE 'UTC'), count(*), count(opened_at), count(accepted_at), count(first_paid_at)
		FROM handovers WHERE $1 = '' OR host_id = $1 GROUP BY 2`, host)
	if err != nil {
		return total, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var kind string
		var week time.Time
		var a, b, c, d int64
		if err := rows.Scan(&kind, &week, &a, &b, &c, &d); err != nil {
			return total, nil, err
		}
		w := byWeek[week]
		if w == nil {
			w = &FunnelWeek{Week: week.UTC()}
			byWeek[week] = w
		}
		if kind == "i" {
			w.Invites = InviteSteps{a, b, c, d}
			total.Invites.Sent += a
			total.Invites.Opened += b
			total.Invites.Accepted += c
			total.Invites.FirstRun += d
		} else {
			w.Handovers = HandoverSteps{a, b, c, d}
			total.Handovers.Started += a
			total.Handovers.Opened += b
			total.Handovers.Accepted += c
			total.Handovers.FirstPaid += d
		}
	}
	if err := rows.Err(); err != nil {
		return total, nil, err
	}
	out := make([]FunnelWeek, 0, len(byWeek))
	for _, w := range byWeek {
		out = append(out, *w)
	}
	slices.SortFunc(out, func(a, b FunnelWeek) int { return b.Week.Compare(a.Week) })
	if weeks > 0 && len(out) > weeks {
		out = out[:weeks]
	}
	return total, out, nil
}

// MarkInviteOpened records that an invite's link was opened (its page
// shown); only the first time counts.
func (s *Store) MarkInviteOpened(ctx context.Context, id string) error {
	_, err := s.Pool.Exec(ctx, `UPDATE invites SET opened_at = now() WHERE id = $1 AND opened_at IS NULL`, id)
	return err
}

// MarkHandoverOpened records that a handover's offer was opened; only the
// first time counts.
func (s *Store) MarkHandoverOpened(ctx context.Context, id string) error {
	_, err := s.Pool.Exec(ctx, `UPDATE handovers SET opened_at = now() WHERE id = $1 AND opened_at IS NULL`, id)
	return err
}

// AcceptRates are the funnel's invite accept rate (accepted over sent) and
// handover accept rate (accepted over decided: accepted, declined or
// expired; c gives today's declined and expired), each nil when there is
// nothing to divide by.
func (f Funnel) AcceptRates(c Conversion) (invite, handover *float64) {
	return Ratio(f.Invites.Accepted, f.Invites.Sent),
		Ratio(f.Handovers.Accepted, f.Handovers.Accepted+c.HandoversDeclined+c.HandoversExpired)
}

// RecentFlushes lists an account's latest flushes, newest first, at most limit.
func (s *Store) RecentFlushes(ctx context.Context, account string, limit int) ([]Flush, error) {
	return queryAll(ctx, s, scanFlush, `SELECT `+flushColumns+` FROM flushes WHERE account_id = $1
		ORDER BY created_at DESC, id LIMIT $2`, account, limit)
}

// RecentInvites lists a host's latest invites, newest first, at most limit.
func (s *Store) RecentInvites(ctx context.Context, host string, limit int) ([]Invite, error) {
	return queryAll(ctx, s, scanInvite, `SELECT `+inviteColumns+` FROM invites WHERE host_id = $1
		ORDER BY created_at DESC, id LIMIT $2`, host, limit)
}

// RecentGuestSessions lists the latest guest sessions of a host's
// projects, newest first, at most limit.
func (s *Store) RecentGuestSessions(ctx context.Context, host string, limit int) ([]GuestSession, error) {
	return queryAll(ctx, s, scanGuest, `SELECT `+guestColumns+` FROM guest_sessions WHERE host_id = $1
		ORDER BY created_at DESC, id LIMIT $2`, host, limit)
}

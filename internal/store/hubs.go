package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Hub is the bridge's view of one hub.
type Hub struct {
	DeviceID string
	Account  string
	Version  string
	Hostname string
	Bridge   string
	// BridgeInstance is the bridge process the hub's control stream is on
	// (see BridgeBeat); empty when a bridge that predates it registered
	// the hub.
	BridgeInstance string
	// Connected: the registry says the hub's link is up and its bridge
	// process is alive (it beat within BridgeStale). A hub whose bridge died
	// without closing its links is not connected, though its row says so
	// until a surviving bridge's sweep. BridgeDead says that is why: its
	// bridge is dead, or a surviving bridge marked it disconnected for that
	// (until the hub's link ends or it connects again).
	Connected   bool
	BridgeDead  bool
	ConnectedAt *time.Time
	LastSeen    time.Time
	RTTMicros   int
	GPUCount    int
	GPULoad     float64
	GPUTempC    float64
	CPULoad     float64
	NVML        bool
	Vitals      json.RawMessage // protojson HardwareVitals
	Reconnects  int
	// Features are what the hub's code said it does in its hello (hub/wire's
	// Feature constants); none for an older hub.
	Features []string
}

// HubConnected records a hub's control stream opening. It returns the
// connection's time in the registry (for HubDisconnected) and whether the hub
// had connected before (a reconnect). Each registration of a hub gets a time
// later than its last one's, in the order the registry wrote them: now() is
// when a statement's transaction began, so of two registrations racing for
// the row the one that began later may be written first, and a database
// clock stepped back would otherwise date a new connection before an old.
func (s *Store) HubConnected(ctx context.Context, h Hub) (time.Time, bool, error) {
	var seen bool
	var at time.Time
	err := s.Pool.QueryRow(ctx, `
		INSERT INTO hubs (device_id, version, hostname, bridge, bridge_instance, instance_at, features, connected, connected_at, last_seen)
		VALUES ($1, $2, $3, $4, nullif($5, ''), now(), $6, true, now(), now())
		ON CONFLICT (device_id) DO UPDATE SET version = excluded.version, hostname = excluded.hostname,
			bridge = excluded.bridge, bridge_instance = excluded.bridge_instance, bridge_lost_at = NULL, features = excluded.features,
			instance_at = greatest(now(), hubs.connected_at + interval '1 microsecond'),
			connected = true, connected_at = greatest(now(), hubs.connected_at + interval '1 microsecond'),
			last_seen = now(), reconnects = hubs.reconnects + 1
		RETURNING connected_at, xmax <> 0`,
		h.DeviceID, h.Version, h.Hostname, h.Bridge, h.BridgeInstance, nonNil(h.Features)).Scan(&at, &seen)
	return at, seen, err
}

// HubUsage is one inference a hub served locally.
type HubUsage struct {
	EventID          string
	DeviceID         string
	Project          string
	Model            string
	PromptTokens     int
	CompletionTokens int
	ServedAt         time.Time
}

// RecordHubUsage stores a usage record once: a second copy of the same
// device's event id changes nothing and is not an error. Event ids are the
// hub's own, so another device's record under the same id is another record.
func (s *Store) RecordHubUsage(ctx context.Context, u HubUsage) error {
	_, err := s.Pool.Exec(ctx, `INSERT INTO hub_usage (event_id, device_id, project, model, prompt_tokens, completion_tokens, served_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (device_id, event_id) DO NOTHING`,
		u.EventID, u.DeviceID, u.Project, u.Model, u.PromptTokens, u.CompletionTokens, u.ServedAt)
	return err
}

// HubUsageCount counts a device's stored usage records.
func (s *Store) HubUsageCount(ctx context.Context, deviceID string) (int, error) {
	var n int
	err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM hub_usage WHERE device_id = $1`, deviceID).Scan(&n)
	return n, err
}

// HubDisconnected records a hub's control stream closing, unless the hub has
// already reconnected through another bridge connection since connectedAt.
func (s *Store) HubDisconnected(ctx context.Context, deviceID string, connectedAt time.Time) error {
	// A link that ends is why the hub is offline, even one a sweep marked
	// lost while its bridge stalled: that bridge has nothing to take back.
	_, err := s.Pool.Exec(ctx, `UPDATE hubs SET connected = false, bridge_lost_at = NULL WHERE device_id = $1 AND connected_at <= $2`, deviceID, connectedAt)
	return err
}

// HubBeat is one hub's latest heartbeat, for SaveHeartbeats.
type HubBeat struct {
	DeviceID  string
	At        time.Time
	RTTMicros int
	GPUCount  int
	GPULoad   float64
	GPUTempC  float64
	CPULoad   float64
	NVML      bool
	Vitals    string // protojson HardwareVitals; empty for none
	// VitalsKept says the hub's row already holds Vitals (the caller wrote
	// that document before): the beat's figures are written, the document
	// is not sent again.
	VitalsKept bool
	// HistoryKept says the caller knows the vitals history already holds
	// a reading of this hub less than VitalsInterval before At (one it
	// wrote itself): the beat updates the hub's row and is not offered to
	// the history, which would keep it out anyway.
	HistoryKept bool
}

// SaveHeartbeats writes the latest heartbeat of many hubs in one statement.
func (s *Store) SaveHeartbeats(ctx context.Context, beats []HubBeat) error {
	_, err := s.SaveHeartbeatsUpdated(ctx, beats)
	return err
}

// BeatSaved is what the registry took of one hub's beat.
type BeatSaved uint8

const (
	// RowSaved: the hub's row took the beat (not one unknown to the
	// registry, nor one whose last_seen was already later: another
	// bridge's write, or a registration on the database's clock ahead of
	// the caller's).
	RowSaved BeatSaved = 1 << iota
	// HistorySaved: the vitals history took it as a new reading (it held
	// none of the hub's in the VitalsInterval before).
	HistorySaved
)

// SaveHeartbeatsUpdated is SaveHeartbeats, and says what was taken of
// each hub's beat; a hub absent from the map had nothing taken. With an
// error it returns a nil map if the rows were not written, and the map if
// only what follows them failed: the vitals history (the map then holds no
// HistorySaved) or its prune (a *PruneError; the history was written).
func (s *Store) SaveHeartbeatsUpdated(ctx context.Context, beats []HubBeat) (map[string]BeatSaved, error) {
	if len(beats) == 0 {
		return nil, nil
	}
	ids := make([]string, len(beats))
	at := make([]time.Time, len(beats))
	rtt := make([]int32, len(beats))
	gpus := make([]int32, len(beats))
	load := make([]float64, len(beats))
	temp := make([]float64, len(beats))
	cpu := make([]float64, len(beats))
	nvml := make([]bool, len(beats))
	vit := make([]*string, len(beats)) // nil: the row keeps its document
	empty := "{}"
	for i := range beats {
		b := &beats[i]
		ids[i], at[i], rtt[i], gpus[i] = b.DeviceID, b.At, int32(b.RTTMicros), int32(b.GPUCount)
		load[i], temp[i], cpu[i], nvml[i] = b.GPULoad, b.GPUTempC, b.CPULoad, b.NVML
		switch {
		case b.VitalsKept:
		case b.Vitals == "":
			vit[i] = &empty
		default:
			vit[i] = &b.Vitals
		}
	}
	rows, err := s.Pool.Query(ctx, `
		UPDATE hubs h SET last_seen = b.at, rtt_micros = b.rtt, gpu_count = b.gpus, gpu_load = b.load,
			gpu_temp_c = b.temp, cpu_load = b.cpu, nvml = b.nvml, vitals = COALESCE(b.vitals::jsonb, h.vitals)
		FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[], $5::float8[], $6::float8[], $7::float8[], $8::bool[], $9::text[])
			AS b(id, at, rtt, gpus, load, temp, cpu, nvml, vitals)
		WHERE h.device_id = b.id AND h.last_seen <= b.at
		RETURNING h.device_id`,
		ids, at, rtt, gpus, load, temp, cpu, nvml, vit)
	if err != nil {
		return nil, err
	}
	saved := make(map[string]BeatSaved, len(beats))
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error { saved[id] |= RowSaved; return nil })
	if err != nil {
		return nil, err
	}
	// The history keeps one reading per hub per VitalsInterval, so its size
	// is bounded by hubs x retention / interval however often hubs beat.
	// Only the beats the caller does not know to be kept out are offered
	// (the columns are reused: n <= i).
	n := 0
	for i := range beats {
		if beats[i].HistoryKept {
			continue
		}
		ids[n], at[n], rtt[n], load[n], temp[n], cpu[n] = ids[i], at[i], rtt[i], load[i], temp[i], cpu[i]
		n++
	}
	if n > 0 {
		rows, err := s.Pool.Query(ctx, `
			INSERT INTO hub_vitals (device_id, at, gpu_load, gpu_temp_c, cpu_load, rtt_micros)
			SELECT b.id, b.at, b.load, b.temp, b.cpu, b.rtt
			FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::float8[], $5::float8[], $6::float8[]) AS b(id, at, rtt, load, temp, cpu)
			WHERE EXISTS (SELECT 1 FROM hubs h WHERE h.device_id = b.id)
				AND NOT EXISTS (SELECT 1 FROM hub_vitals v WHERE v.device_id = b.id AND v.at > b.at - $7::interval)
			ON CONFLICT DO NOTHING
			RETURNING device_id`,
			ids[:n], at[:n], rtt[:n], load[:n], temp[:n], cpu[:n], VitalsInterval.String())
		if err != nil {
			return saved, err
		}
		var kept []string
		_, err = pgx.ForEachRow(rows, []any{&id}, func() error { kept = append(kept, id); return nil })
		if err != nil {
			return saved, err
		}
		for _, id := range kept {
			saved[id] |= HistorySaved
		}
	}
	if err := s.pruneVitals(ctx); err != nil {
		return saved, &PruneError{err}
	}
	return saved, nil
}

// PruneError is a failure to delete vitals readings past VitalsRetention,
// after the beats and their history were written; the next save prunes.
type PruneError struct{ Err error }

func (e *PruneError) Error() string { return "prune the hubs' vitals history: " + e.Err.Error() }
func (e *PruneError) Unwrap() error { return e.Err }

// The vitals history: one reading per hub every VitalsInterval at most,
// kept for VitalsRetention.
const (
	VitalsInterval  = time.Minute
	VitalsRetention = 24 * time.Hour
)

// pruneVitals deletes readings older than VitalsRetention, at most once a
// VitalsInterval per process.
func (s *Store) pruneVitals(ctx context.Context) error {
	now := time.Now().UnixNano()
	last := s.vitalsPruned.Load()
	if now-last < int64(VitalsInterval) || !s.vitalsPruned.CompareAndSwap(last, now) {
		return nil
	}
	_, err := s.Pool.Exec(ctx, `DELETE FROM hub_vitals WHERE at < now() - $1::interval`, VitalsRetention.String())
	return err
}

// VitalsPoint is one reading in a hub's vitals history.
type VitalsPoint struct {
	At        time.Time `json:"at"`
	GPULoad   float64   `json:"gpu_load"`
	GPUTempC  float64   `json:"gpu_temp_c"`
	CPULoad   float64   `json:"cpu_load"`
	RTTMicros int       `json:"rtt_micros"`
}

// HubsOf lists an account's hubs, most recently seen first.
func (s *Store) HubsOf(ctx context.Context, account string) ([]Hub, error) {
	return queryAll(ctx, s, scanHub, `SELECT `+hubColumns+` FROM hubs h JOIN devices d ON d.id = h.device_id
		WHERE d.account = $1 ORDER BY h.last_seen DESC, h.device_id LIMIT 100`, account)
}

// VitalsHistory returns the readings since t of an account's hubs, oldest
// first, by device id.
func (s *Store) VitalsHistory(ctx context.Context, account string, since time.Time) (map[string][]VitalsPoint, error) {
	rows, err := s.Pool.Query(ctx, `SELECT v.device_id, v.at, v.gpu_load, v.gpu_temp_c, v.cpu_load, v.rtt_micros
		FROM hub_vitals v JOIN devices d ON d.id = v.device_id
		WHERE d.account = $1 AND v.at >= $2 ORDER BY v.device_id, v.at LIMIT 20000`, account, since)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]VitalsPoint{}
	for rows.Next() {
		var id string
		var p VitalsPoint
		if err := rows.Scan(&id, &p.At, &p.GPULoad, &p.GPUTempC, &p.CPULoad, &p.RTTMicros); err != nil {
			return nil, err
		}
		out[id] = append(out[id], p)
	}
	return out, rows.Err()
}

var hubColumns = `h.device_id, d.account, h.version, h.hostname, h.bridge, CASE WHEN ` + ownRegistrationSQL + ` THEN coalesce(h.bridge_instance, '') ELSE '' END, ` +
	hubLiveSQL + `, ` + bridgeDeadSQL + `, h.connected_at, h.last_seen, h.rtt_micros, h.gpu_count, h.gpu_load, h.gpu_temp_c, h.cpu_load, h.nvml,
	h.vitals, h.reconnects, CASE WHEN ` + ownRegistrationSQL + ` THEN h.features ELSE '{}' END`

func scanHub(row pgx.Row) (Hub, error) {
	var h Hub
	err := row.Scan(&h.DeviceID, &h.Account, &h.Version, &h.Hostname, &h.Bridge, &h.BridgeInstance, &h.Connected, &h.BridgeDead,
		&h.ConnectedAt, &h.LastSeen, &h.RTTMicros, &h.GPUCount, &h.GPULoad, &h.GPUTempC, &h.CPULoad, &h.NVML, &h.Vitals, &h.Reconnects, &h.Features)
	return h, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Hubs lists every hub the bridge has seen, most recently seen first.
func (s *Store) Hubs(ctx context.Context) ([]Hub, error) {
	return queryAll(ctx, s, scanHub, `SELECT `+hubColumns+` FROM hubs h JOIN devices d ON d.id = h.device_id ORDER BY h.last_seen DESC, h.device_id`)
}

// EnrolledDevice is a device with a certificate whose hub has never connected.
type EnrolledDevice struct {
	DeviceID   string
	Account    string
	EnrolledAt time.Time
}

// NeverConnected lists unrevoked devices whose hub has never connected to a
// bridge, oldest enrollment first.
func (s *Store) NeverConnected(ctx context.Context) ([]EnrolledDevice, error) {
	return queryAll(ctx, s, func(row pgx.Row) (EnrolledDevice, error) {
		var d EnrolledDevice
		err := row.Scan(&d.DeviceID, &d.Account, &d.EnrolledAt)
		return d, err
	}, `SELECT d.id, d.account, d.created_at FROM devices d
		WHERE d.revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM hubs h WHERE h.device_id = d.id)
		ORDER BY d.created_at, d.id`)
}

// PreferredHub is where an account's inference should go: its connected,
// unrevoked hub with the lowest GPU load (the most recently seen among
// equals). ErrNotFound when the account has none.
func (s *Store) PreferredHub(ctx context.Context, account string) (Hub, error) {
	h, err := scanHub(s.Pool.QueryRow(ctx, `SELECT `+hubColumns+` FROM hubs h JOIN devices d ON d.id = h.device_id
		WHERE d.account = $1 AND `+hubLiveSQL+` AND d.revoked_at IS NULL
		ORDER BY h.gpu_load, h.last_seen DESC, h.device_id LIMIT 1`, account))
	if errors.Is(err, pgx.ErrNoRows) {
		return h, ErrNotFound
	}
	return h, err
}

// HubByID returns one hub.
func (s *Store) HubByID(ctx context.Context, deviceID string) (Hub, error) {
	h, err := scanHub(s.Pool.QueryRow(ctx, `SELECT `+hubColumns+` FROM hubs h JOIN devices d ON d.id = h.device_id WHERE h.device_id = $1`, deviceID))
	if errors.Is(err, pgx.ErrNoRows) {
		return h, ErrNotFound
	}
	return h, err
}

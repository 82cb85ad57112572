package wire

import "slices"

// Features a hub names in its hello (Hello.features): what its code does
// that an older hub's does not, so the cloud can treat each hub as the code
// it runs. A hub that names none predates them all.
const (
	// FeatureStepHeartbeat: the hub's agent steps heartbeat while they run
	// (activities.HeartbeatEvery), so the workflow may give them a heartbeat
	// timeout. An older hub's steps must run without one, or every step
	// longer than the timeout would fail.
	FeatureStepHeartbeat = "step-heartbeat"
	// FeatureSampling: the hub's Logos calls honour a step's temperature and
	// seed, so a vote's samples there differ. An older hub ignores both and
	// would return k copies of one answer, each billed: a vote's samples
	// run in the cloud instead.
	FeatureSampling = "sampling"
)

// HubFeatures are the features this build's hubs have.
func HubFeatures() []string { return []string{FeatureStepHeartbeat, FeatureSampling} }

// MaxFeatures bounds how many features a hello may name.
const MaxFeatures = 32

// HasFeature says whether features names f.
func HasFeature(features []string, f string) bool { return slices.Contains(features, f) }

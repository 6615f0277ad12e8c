package cluster

import "go.uber.org/zap"

// zapNop silences the etcd client's own zap logger; fangd logs what
// matters (joining failed, lease lost, excluded) through zerolog.
func zapNop() *zap.Logger { return zap.NewNop() }

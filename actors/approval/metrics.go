package approval

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fangd/fangd/actors/kernel"
)

// metrics are the approvals' Prometheus series. Both are moved only by
// the supervisor, from its index: pending is the requests it indexes as
// waiting (reset and recounted when it reloads), decided counts the
// decisions it learns of, by outcome (approved, rejected, expired).
type metrics struct {
	pending prometheus.Gauge
	decided *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fangd_approvals_pending",
			Help: "Approval requests waiting for a decision."}),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fangd_approvals_decided_total",
			Help: "Approval requests decided, by outcome (approved, rejected, expired)."}, []string{"outcome"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.pending, err = kernel.RegisterMetric(reg, m.pending); err != nil {
		return nil, err
	}
	if m.decided, err = kernel.RegisterMetric(reg, m.decided); err != nil {
		return nil, err
	}
	return m, nil
}

package approval

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
	if m.pending, err = register(reg, m.pending); err != nil {
		return nil, err
	}
	if m.decided, err = register(reg, m.decided); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered
// under its name (approvals restarted on the same kernel keep counting
// into the same series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

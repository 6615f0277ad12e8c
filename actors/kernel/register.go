package kernel

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetric registers c on reg, or returns the collector already
// registered under the same description: a domain restarted on the same
// kernel keeps counting into the series it registered first.
func RegisterMetric[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

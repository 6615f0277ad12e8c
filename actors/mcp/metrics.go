package mcp

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrapeTimeout bounds how long a scrape waits for the supervisor's server
// list; a busy supervisor costs the scrape these series, not a hung /metrics.
const scrapeTimeout = 2 * time.Second

var (
	serversDesc = prometheus.NewDesc("fangd_mcp_servers",
		"Configured MCP servers, by connection status (connecting, connected, reconnecting, error, disabled).",
		[]string{"status"}, nil)
	serverConnectedDesc = prometheus.NewDesc("fangd_mcp_server_connected",
		"1 when the MCP server's connection is up, 0 otherwise.", []string{"server"}, nil)
)

// serverCollector reads the supervisor's server views at scrape time, so
// the series are the state GET /api/mcp/servers would show, not a copy
// kept in step by hand. Labels are bounded: five statuses, and one series
// per configured server.
type serverCollector struct{ m *Manager }

func (c serverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- serversDesc
	ch <- serverConnectedDesc
}

func (c serverCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	views, err := c.m.Servers(ctx)
	if err != nil {
		c.m.env.log.Warn().Err(err).Msg("metrics: MCP server list unavailable for this scrape")
		return
	}
	counts := map[string]int{StatusConnecting: 0, StatusConnected: 0, StatusReconnecting: 0, StatusError: 0, StatusDisabled: 0}
	for _, v := range views {
		counts[v.Status]++
		up := 0.0
		if v.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(serverConnectedDesc, prometheus.GaugeValue, up, v.Name)
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(serversDesc, prometheus.GaugeValue, float64(n), status)
	}
}

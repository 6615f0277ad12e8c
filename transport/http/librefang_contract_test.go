package http

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// LibreFang's GET /api/logs/stream starts with a backfill of its last 200
// entries (routes/logs.rs), so a client that passes no query sees the
// recent past at once; fangd replays its last 200 lines the same way.
func TestLogStreamBackfillsWithoutQuery(t *testing.T) {
	ts := newTestServer(t, nil)
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	zerolog.SetGlobalLevel(zerolog.TraceLevel)
	// The test ring holds fewer lines than LogBackfill: all of it replays.
	n := min(LogBackfill, ts.deps.Logs.Size())
	for i := range n {
		ts.log.Info().Int("n", i).Msg("before the client came")
	}
	ts.log.Info().Msg("the last line before")
	br, stop := ts.openStream(t, "/api/logs/stream")
	defer stop()
	got := readEvents(t, br, n, isLog)
	if !strings.Contains(got[0].data, `"n":1,`) || !strings.Contains(got[n-1].data, "the last line before") {
		t.Fatalf("backfill runs %q .. %q", got[0].data, got[n-1].data)
	}
	// Then live lines.
	ts.log.Warn().Msg("live now")
	readEvents(t, br, 1, func(e sseEvent) bool { return strings.Contains(e.data, "live now") })
}

package http

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel/whatsapp"
	"github.com/fangd/fangd/actors/channel/whatsapp/whatsapptest"
)

// LibreFang's GET /api/logs/stream starts with a backfill of its last 200
// entries (routes/logs.rs), so a client that passes no query sees the
// recent past at once; fangd replays its last 200 lines the same way.
func TestLogStreamBackfillsWithoutQuery(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	// The test ring holds fewer lines than LogBackfill: all of it replays.
	n := min(LogBackfill, ts.deps.Logs.Size())
	for i := range n {
		ts.log.Info().Int("n", i).Msg("before the client came")
	}
	ts.log.Info().Msg("the last line before")
	br, stop := ts.openStream(t, "/api/logs/stream")
	defer stop()
	// The stream is subscribed once its headers arrive: a line logged now
	// is live, and everything before it on the stream is backfill.
	ts.log.Warn().Msg("live now")
	var got []sseEvent
	for {
		e := readEvents(t, br, 1, isLog)[0]
		if strings.Contains(e.data, "live now") {
			break
		}
		got = append(got, e)
	}
	if len(got) != n || !strings.Contains(got[0].data, `"n":1,`) || !strings.Contains(got[n-1].data, "the last line before") {
		t.Fatalf("backfill of %d lines, want %d: %+v", len(got), n, got)
	}
}

// LibreFang's GET /api/channels/registry is a JSON array of channel
// metadata (ChannelMeta: id, name, description, category, tags, icon,
// protocol, i18n); before, "registry" was taken for a channel's name.
func TestChannelRegistryAndQRContract(t *testing.T) {
	gw := whatsapptest.NewGateway()
	defer gw.Close()
	t.Setenv(whatsapp.GatewayEnv, "")
	ts := whatsappServer(t)
	r := ts.authed(t, "GET", "/api/channels/registry", "")
	var reg []map[string]any
	if err := json.Unmarshal(r.body, &reg); err != nil || r.status != 200 || len(reg) != 44 {
		t.Fatalf("registry: %d %.300s", r.status, r.body)
	}
	var wa map[string]any
	for _, e := range reg {
		for _, k := range []string{"id", "name", "description", "category", "tags", "icon", "protocol", "i18n", "metadata", "setup_type", "supported"} {
			if _, ok := e[k]; !ok {
				t.Fatalf("registry entry without %q: %v", k, e)
			}
		}
		if e["id"] == "whatsapp" {
			wa = e
		}
	}
	if wa == nil || wa["name"] != "WhatsApp" || wa["setup_type"] != "qr" {
		t.Fatalf("whatsapp entry: %v", wa)
	}

	// GET /api/channels/{name}/qr: 404 when no QR login can run (LibreFang:
	// "sidecar not running"), the login state when it can.
	for path, code := range map[string]string{"/api/channels/telegram/qr": "qr_not_supported",
		"/api/channels/whatsapp/qr": "qr_gateway_not_running", "/api/channels/nosuch/qr": ""} {
		r := ts.authed(t, "GET", path, "")
		if r.status != 404 || (code != "" && !strings.Contains(string(r.body), code)) {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}
	t.Setenv(whatsapp.GatewayEnv, gw.URL)
	if r := ts.authed(t, "POST", "/api/channels/whatsapp/qr/start", ""); r.status != 200 {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	r = ts.authed(t, "GET", "/api/channels/whatsapp/qr", "")
	var st map[string]any
	if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 || st["available"] != true || st["status"] != "pending" {
		t.Fatalf("qr: %d %s", r.status, r.body)
	}
	gw.Authenticate()
	r = ts.authed(t, "GET", "/api/channels/whatsapp/qr", "")
	if r.status != 200 || !strings.Contains(string(r.body), `"status":"authenticated"`) {
		t.Fatalf("qr after scan: %d %s", r.status, r.body)
	}
}

// LibreFang's audit answers (routes/audit.rs): recent's items carry seq,
// action and detail (with offset, limit, tip_hash); verify says valid and
// entries. The seed page's entries/id/event_type/details and status stay.
func TestAuditRecentAndVerifyLibreFangFields(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, nil)
	for range 3 {
		if r := ts.authed(t, "PUT", "/api/logs/level", `{"level":"info"}`); r.status != 200 {
			t.Fatalf("put level: %d %s", r.status, r.body)
		}
	}
	r := ts.authed(t, "GET", "/api/audit/recent?limit=2", "")
	var rec struct {
		Entries []map[string]any `json:"entries"`
		Items   []map[string]any `json:"items"`
		Total   float64          `json:"total"`
		Limit   *float64         `json:"limit"`
		Offset  *float64         `json:"offset"`
		TipHash string           `json:"tip_hash"`
	}
	if err := json.Unmarshal(r.body, &rec); err != nil || r.status != 200 || len(rec.Entries) != 2 || len(rec.Items) != 2 ||
		rec.Limit == nil || *rec.Limit != 2 || rec.Offset == nil || rec.Total < 3 {
		t.Fatalf("recent: %d %s", r.status, r.body)
	}
	for i, e := range rec.Items {
		if e["seq"] != e["id"] || e["action"] != e["event_type"] || e["detail"] != e["details"] || e["hash"] == nil ||
			rec.Entries[i]["seq"] != e["seq"] {
			t.Fatalf("item %d: %v", i, e)
		}
	}
	if rec.TipHash != rec.Items[0]["hash"] {
		t.Fatalf("tip_hash %q, newest hash %v", rec.TipHash, rec.Items[0]["hash"])
	}
	r = ts.authed(t, "GET", "/api/audit/verify", "")
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil || r.status != 200 || v["status"] != "valid" || v["valid"] != true ||
		v["entries"] != v["chain_length"] || v["tip_hash"] == nil {
		t.Fatalf("verify: %d %s", r.status, r.body)
	}
}

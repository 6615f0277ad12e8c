package http

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/telegram"
	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

const tgToken = "123:abcDEF"

func channelServer(t *testing.T) (*testServer, *telegramtest.Server) {
	t.Helper()
	return channelServerWith(t, nil)
}

// channelServerWith is channelServer with its channel.Options changed by
// opts (nil: unchanged).
func channelServerWith(t *testing.T, opts func(*channel.Options)) (*testServer, *telegramtest.Server) {
	t.Helper()
	fake := telegramtest.New(tgToken)
	t.Cleanup(fake.Close)
	ts := newTestServer(t, nil, func(s *Server) {
		v := testVault(t, s)
		o := channel.Options{Kernel: s.deps.Kernel, DB: s.deps.Store, Vault: v,
			Builders: channel.Builders{"telegram": telegram.New}}
		if opts != nil {
			opts(&o)
		}
		svc, err := channel.Start(o)
		if err != nil {
			t.Fatal(err)
		}
		s.deps.Channels = svc
	})
	return ts, fake
}

func TestChannelEndpoints(t *testing.T) {
	t.Parallel()
	ts, fake := channelServer(t)

	r := ts.authed(t, "GET", "/api/channels", "")
	var list struct {
		Channels []map[string]any `json:"channels"`
		Total    int              `json:"total"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil || r.status != 200 || list.Total != 44 || len(list.Channels) != 44 {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	tg := list.Channels[0]
	for _, k := range []string{"name", "display_name", "category", "enabled", "configured", "has_token", "supported", "status",
		"last_error", "connected_since", "last_message_at", "messages_in", "messages_out", "restarts", "fields"} {
		if _, ok := tg[k]; !ok {
			t.Errorf("channel object lacks %q", k)
		}
	}
	if tg["name"] != "telegram" || tg["supported"] != true || tg["status"] != "unconfigured" {
		t.Fatalf("telegram row = %v", tg)
	}
	field := tg["fields"].([]any)[0].(map[string]any)
	if field["key"] != "bot_token" || field["type"] != "secret" || field["env_var"] != "TELEGRAM_BOT_TOKEN" || field["has_value"] != false {
		t.Fatalf("field = %v", field)
	}

	if r := ts.authed(t, "GET", "/api/v1/channels/nope", ""); r.status != 404 {
		t.Fatalf("unknown channel: %d", r.status)
	}
	if r := ts.authed(t, "POST", "/api/channels/reddit/configure", `{"token":"x"}`); r.status != 501 || r.envelope(t).Code != "adapter_not_supported" {
		t.Fatalf("unsupported: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/api/channels/telegram/configure", `{"token":"x","bogus":1}`); r.status != 400 || !strings.Contains(r.envelope(t).Error, "bogus") {
		t.Fatalf("unknown field: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/api/channels/telegram/test", ""); r.status != 412 {
		t.Fatalf("test unconfigured: %d %s", r.status, r.body)
	}

	r = ts.authed(t, "POST", "/api/channels/telegram/configure",
		`{"token":"`+tgToken+`","api_url":"`+fake.URL()+`","poll_interval_secs":1,"webhook_secret":"hook-secret"}`)
	if r.status != 200 || !strings.Contains(string(r.body), `"status":"configured"`) || !strings.Contains(string(r.body), `"activated":true`) {
		t.Fatalf("configure: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), tgToken) {
		t.Fatal("configure echoed the token")
	}
	var one map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = ts.authed(t, "GET", "/api/channels/telegram", "")
		json.Unmarshal(r.body, &one)
		if one["status"] == "connected" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if one["status"] != "connected" || one["has_token"] != true || strings.Contains(string(r.body), tgToken) {
		t.Fatalf("detail: %s", r.body)
	}
	if r := ts.authed(t, "GET", "/api/channels?configured=true", ""); !strings.Contains(string(r.body), `"total":1`) {
		t.Fatalf("configured list: %s", r.body)
	}
	if r := ts.authed(t, "POST", "/api/channels/telegram/test", `{"chat_id": 42}`); r.status != 200 || len(fake.Sent()) != 1 || fake.Sent()[0].ChatID != "42" {
		t.Fatalf("test send: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/api/channels/telegram/test", `{"chat_id": "404"}`); r.status != 502 || !strings.Contains(string(r.body), "chat not found") {
		t.Fatalf("test send to a missing chat: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "POST", "/api/channels/telegram/test", ""); r.status != 200 || !strings.Contains(string(r.body), "@fangd_test_bot") {
		t.Fatalf("test probe: %d %s", r.status, r.body)
	}

	// Webhooks: no API key, the platform's own secret, 1 MiB cap.
	update := string(fake.Update(42, 7, "alice", "hi"))
	if r := ts.do(t, "POST", "/channels/telegram/webhook", update, "Content-Type", "application/json"); r.status != 401 {
		t.Fatalf("webhook without secret: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "POST", "/channels/telegram/webhook", update, "X-Telegram-Bot-Api-Secret-Token", "hook-secret"); r.status != 200 {
		t.Fatalf("webhook: %d %s", r.status, r.body)
	}
	big := `{"x":"` + strings.Repeat("a", 1<<20) + `"}`
	if r := ts.do(t, "POST", "/channels/telegram/webhook", big, "X-Telegram-Bot-Api-Secret-Token", "hook-secret"); r.status != 413 {
		t.Fatalf("big webhook: %d", r.status)
	}
	if r := ts.do(t, "POST", "/channels/nothing/webhook", "{}"); r.status != 404 {
		t.Fatalf("webhook for unknown channel: %d", r.status)
	}

	// The configure call is audited with field names, never the token.
	found := false
	for _, e := range ts.recent(t, 50) {
		if strings.Contains(e.Details, tgToken) || strings.Contains(e.Details, "hook-secret") {
			t.Fatalf("secret in audit: %s", e.Details)
		}
		if strings.Contains(e.Details, "channel telegram (telegram) configured") && strings.Contains(e.Details, "bot_token") {
			found = true
		}
	}
	if !found {
		t.Fatal("configure not audited")
	}

	if r := ts.authed(t, "DELETE", "/api/channels/telegram/configure", ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := ts.authed(t, "DELETE", "/api/channels/telegram/configure", ""); r.status != 404 {
		t.Fatalf("second delete: %d", r.status)
	}
	if r := ts.authed(t, "POST", "/api/channels/reload", ""); r.status != 412 {
		t.Fatalf("reload with no config file: %d %s", r.status, r.body)
	}
}

// The list is written one channel at a time; the bytes are the ones
// writeJSON writes for the same object.
func TestChannelListStreamsWriteJSONBytes(t *testing.T) {
	t.Parallel()
	agent := "helper"
	list := []channel.View{
		{Name: "telegram", Adapter: "telegram", AgentName: &agent, Fields: []channel.FieldView{{Key: "api_url", Value: "http://x/<&>"}}},
		{Name: "tg-2", Adapter: "telegram", Configured: true},
		{Name: "irc", Adapter: "irc"},
	}
	for _, views := range [][]channel.View{nil, list[:1], list} {
		var want, got fasthttp.RequestCtx
		shown := views
		if shown == nil {
			shown = []channel.View{}
		}
		p := channelPage{Channels: shown, Configured: 1, pageInfo: pageOf(len(shown)+2, 1, 3)}
		writeJSON(&want, 200, p)
		writeChannelList(&got, p)
		if !got.Response.IsBodyStream() {
			t.Fatal("the list is not streamed")
		}
		if g, w := string(got.Response.Body()), string(want.Response.Body()); g != w {
			t.Fatalf("streamed list:\n%s\nwant:\n%s", g, w)
		}
		if ct := string(got.Response.Header.ContentType()); ct != "application/json" {
			t.Fatalf("content type %q", ct)
		}
	}
}

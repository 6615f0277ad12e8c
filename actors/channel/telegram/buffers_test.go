package telegram

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel"
)

// The client reads and writes through pooled buffers (see botClient).
// These pin that messages, bodies and header lines larger than the write
// buffer, and bodies larger than the read buffer, still go through whole,
// both ways.
func TestSmallBuffersCarryLargeMessages(t *testing.T) {
	long := strings.Repeat("ü", 12000) // 24,000 bytes of UTF-8
	longHeader := strings.Repeat("h", 6000)
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Long", longHeader)
		var params map[string]any
		if err := json.NewDecoder(r.Body).Decode(&params); err != nil {
			w.WriteHeader(400)
			return
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/getMe"):
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": map[string]any{"id": 1, "is_bot": true,
				"first_name": long, "username": "b"}})
		case strings.HasSuffix(r.URL.Path, "/sendMessage"):
			got, _ = params["text"].(string)
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": map[string]any{"message_id": 9,
				"chat": map[string]any{"id": 1, "type": "private"}, "date": 1}})
		default:
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	cfg := &channel.Config{Name: "telegram", Adapter: "telegram", Spec: mustSpec(t),
		Values: map[string]string{"api_url": srv.URL}, Secrets: map[string]string{"bot_token": "1:x"}}
	ad, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ad.Probe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if id.DisplayName != long {
		t.Fatalf("a response larger than the read buffer was cut: %d bytes", len(id.DisplayName))
	}
	if _, err := ad.Send(context.Background(), channel.Outbound{ChatID: "1", Text: long}); err != nil {
		t.Fatal(err)
	}
	if got != long {
		t.Fatalf("a request larger than the write buffer was cut: %d bytes", len(got))
	}
}

func mustSpec(t *testing.T) *channel.Spec {
	spec, ok := channel.Lookup("telegram")
	if !ok {
		t.Fatal("telegram is not in the registry")
	}
	return spec
}

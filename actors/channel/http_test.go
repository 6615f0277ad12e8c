package channel

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// CallJSON sends In as JSON with the call's headers, decodes a 2xx answer
// into Out, and leaves a refusal and a garbled answer to the caller's words.
func TestCallJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.URL.Path == "/refuse":
			http.Error(w, "no", http.StatusForbidden)
		case r.URL.Path == "/garbled":
			_, _ = io.WriteString(w, "{")
		case r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Key") != "k" || string(body) != `{"q":1}`:
			http.Error(w, "bad request", http.StatusBadRequest)
		default:
			_, _ = io.WriteString(w, `{"a":2}`)
		}
	}))
	defer srv.Close()
	refused := errors.New("refused")
	call := func(path string, out any) error {
		return CallJSON(context.Background(), srv.Client(), Call{Method: http.MethodPost, URL: srv.URL + path,
			Header: http.Header{"X-Key": {"k"}}, In: map[string]int{"q": 1}, Out: out, Limit: 1 << 10, What: "test: " + path,
			Refused: func(resp *http.Response, _ []byte) error {
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("refused with %d", resp.StatusCode)
				}
				return refused
			}})
	}
	var out struct{ A int }
	if err := call("/ok", &out); err != nil || out.A != 2 {
		t.Fatalf("ok call: %v, out %+v", err, out)
	}
	if err := call("/refuse", nil); err != refused {
		t.Fatalf("refused call: %v", err)
	}
	if err := call("/garbled", &out); err == nil || !strings.Contains(err.Error(), "test: /garbled: bad response") {
		t.Fatalf("garbled answer: %v", err)
	}
	if err := call("/garbled", nil); err != nil {
		t.Fatalf("an answer nobody reads is not checked: %v", err)
	}
}

package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
)

// postJSON posts body as JSON to endpoint, asking for server-sent events when
// stream and for JSON otherwise. headers are name/value pairs; a pair with
// an empty value is not sent (no key configured: no credential header).
func postJSON(ctx context.Context, hc *http.Client, endpoint string, body any, stream bool, headers ...string) (*http.Response, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if stream {
		hreq.Header.Set("Accept", "text/event-stream")
	} else {
		hreq.Header.Set("Accept", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] != "" {
			hreq.Header.Set(headers[i], headers[i+1])
		}
	}
	return hc.Do(hreq)
}

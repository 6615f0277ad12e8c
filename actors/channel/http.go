package channel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// JSONBody is in as a JSON request body; nil in is no body (a nil reader,
// so http.NewRequest sends none).
func JSONBody(in any) (io.Reader, error) {
	if in == nil {
		return nil, nil
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

// Do sends req and reads at most limit bytes of the answer, so a platform
// cannot make an adapter buffer without bound. A transport error comes back
// without url.Error's "METHOD URL:" wrapper: the URL says nothing the
// channel status needs, and some platforms put credentials in it.
func Do(c *http.Client, req *http.Request, limit int64) (*http.Response, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, NetCause(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
	return resp, data, nil
}

// Call is one REST call as the HTTP adapters make it (see CallJSON).
type Call struct {
	Method, URL string
	// Header is added to the request: credentials, Accept.
	Header http.Header
	// In is marshalled as the JSON body (with its Content-Type); nil sends
	// Body instead, which may be nil too.
	In   any
	Body io.Reader
	// Out takes a 2xx answer's JSON; nil ignores the answer.
	Out any
	// Limit is the most of the answer read (Do).
	Limit int64
	// What names the call in errors: "gotify: GET /message".
	What string
	// Refused makes the error of an answer that is not 2xx, in the
	// platform's words (its error body, its rate-limit headers).
	Refused func(resp *http.Response, data []byte) error
}

// CallJSON does c with client: the request plumbing, the bounded read and
// the decoding every REST adapter wrote alike, leaving it only its
// platform's error body (c.Refused). A request that cannot be built is
// permanent (the URL came from the configuration); a transport error is
// transient.
func CallJSON(ctx context.Context, client *http.Client, c Call) error {
	body := c.Body
	if c.In != nil {
		b, err := JSONBody(c.In)
		if err != nil {
			return Permanent(err)
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, c.Method, c.URL, body)
	if err != nil {
		return Permanent(fmt.Errorf("%s: %w", c.What, err))
	}
	for k, v := range c.Header {
		req.Header[k] = v
	}
	if c.In != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, data, err := Do(client, req, c.Limit)
	if err != nil {
		return fmt.Errorf("%s: %w", c.What, err)
	}
	if resp.StatusCode/100 != 2 {
		return c.Refused(resp, data)
	}
	if c.Out != nil {
		if err := json.Unmarshal(data, c.Out); err != nil {
			return fmt.Errorf("%s: bad response: %w", c.What, err)
		}
	}
	return nil
}

// NetCause is err without url.Error's wrapper (see Do).
func NetCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Clip cuts a platform's error text to n bytes for a status description.
func Clip(desc string, n int) string {
	if len(desc) > n {
		return desc[:n]
	}
	return desc
}

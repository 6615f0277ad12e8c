package channel

import (
	"bytes"
	"encoding/json"
	"errors"
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

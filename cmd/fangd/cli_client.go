package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// defaultClientTimeout bounds one request of a client verb that is not a
// stream or an agent turn (those run as long as they take).
const defaultClientTimeout = 30 * time.Second

// clientOptions are the flags every client verb takes.
type clientOptions struct {
	url, apiKey, config string
	json                bool
	timeout             time.Duration
}

// addClientFlags puts the client flags on cmd and everything under it.
func addClientFlags(cmd *cobra.Command, o *clientOptions) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.url, "url", "", "the daemon's base URL (default $FANGD_URL, else http:// + the config's api_listen)")
	f.StringVar(&o.apiKey, "api-key", "", "API key (default $FANGD_API_KEY, else the config's api_key when --url is the config's own address)")
	f.StringVar(&o.config, "config", "", "config file to read the address and key from (default $FANGD_HOME/config.toml or ~/.fangd/config.toml)")
	f.BoolVar(&o.json, "json", false, "print the server's JSON as is, for scripts")
	f.DurationVar(&o.timeout, "timeout", defaultClientTimeout, "how long one request may take (streams and agent turns are not bounded)")
}

// client is a resolved connection to one daemon.
type client struct {
	base    *url.URL
	key     string
	from    string // where base came from, for messages
	json    bool
	timeout time.Duration
	http    *http.Client
}

// secrets are what the client must never print: every error is scrubbed
// of them before it is shown (scrubSecrets).
var secrets struct {
	sync.Mutex
	list []string
}

func addSecret(s string) {
	if s == "" {
		return
	}
	secrets.Lock()
	secrets.list = append(secrets.list, s)
	secrets.Unlock()
}

func scrubSecrets(s string) string {
	secrets.Lock()
	defer secrets.Unlock()
	for _, k := range secrets.list {
		s = strings.ReplaceAll(s, k, "[redacted]")
	}
	return s
}

// newClient resolves the address and key: flags, then FANGD_URL and
// FANGD_API_KEY, then the config file `fangd serve` reads. The config's
// api_key is only sent to the config's own address: pointing --url or
// FANGD_URL elsewhere never hands the local key to another server.
func newClient(o *clientOptions) (*client, error) {
	rawURL, from := o.url, "--url"
	if rawURL == "" {
		rawURL, from = os.Getenv("FANGD_URL"), "FANGD_URL"
	}
	key := o.apiKey
	if key == "" {
		key = os.Getenv("FANGD_API_KEY")
	}
	addSecret(key)
	var cfgAddr string
	if rawURL == "" || key == "" || o.config != "" {
		cfg, path, err := clientConfig(o.config)
		if err != nil {
			return nil, err
		}
		cfgAddr = dialAddr(cfg.APIListen)
		if rawURL == "" {
			rawURL, from = "http://"+cfgAddr, "api_listen in "+path
		}
		addSecret(cfg.APIKey)
		if key == "" {
			key = cfg.APIKey
		}
	}
	u, err := parseBaseURL(rawURL)
	if err != nil {
		return nil, usagef("%s: %v", from, err)
	}
	if key != "" && o.apiKey == "" && os.Getenv("FANGD_API_KEY") == "" && u.Host != cfgAddr {
		key = "" // the config's key, and the URL is not the config's daemon
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &client{base: u, key: key, from: from, json: o.json, timeout: o.timeout,
		// No client timeout: requests are bounded by their context
		// (--timeout), streams and turns not at all.
		http: &http.Client{Transport: tr}}, nil
}

// clientConfig reads the config file for the daemon's address and key. A
// missing default file is the defaults (127.0.0.1:4545, no key).
func clientConfig(path string) (Config, string, error) {
	explicit := path != ""
	if !explicit {
		home, err := homePath("")
		if err != nil {
			return Config{}, "", usagef("%v", err)
		}
		path = filepath.Join(home, "config.toml")
	}
	cfg, err := loadConfig(path, explicit)
	if err != nil {
		return cfg, path, usagef("%v", err)
	}
	cfg.applyEnv()
	return cfg, path, nil
}

// parseBaseURL accepts http(s)://host[:port][/prefix] or a bare host:port.
func parseBaseURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("scheme %q: want http or https", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("no host in the URL")
	}
	if u.User != nil {
		// A password in the URL would be printed with it; the key goes in
		// --api-key or FANGD_API_KEY.
		return nil, errors.New("credentials in the URL are not accepted: use --api-key or FANGD_API_KEY")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// serverError is a non-2xx answer: its status and the API's error envelope.
type serverError struct {
	Method, Path string
	Status       int
	Code         string
	Message      string
	RequestID    string
}

func (e *serverError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("%s (%s %s answered %d", msg, e.Method, e.Path, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.RequestID != "" {
		s += ", request id " + e.RequestID
	}
	s += ")"
	switch e.Status {
	case http.StatusUnauthorized:
		s += "; give the key with --api-key or FANGD_API_KEY"
	}
	return s
}

// unreachableError is a daemon that could not be asked.
type unreachableError struct {
	base string
	from string
	err  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach fangd at %s (from %s): %v; is it running (`fangd serve`)?", e.base, e.from, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// request is one call to the API.
type request struct {
	method, path string
	query        url.Values
	body         any // JSON-encoded unless nil
	header       map[string]string
	// unbounded requests (streams, agent turns) ignore --timeout.
	unbounded bool
}

// send makes the request and returns the response for a 2xx answer; any
// other is a *serverError, a transport failure an *unreachableError. The
// caller closes the body; cancel ends the request's context when the
// caller is done with the body.
func (c *client) send(ctx context.Context, r request) (resp *http.Response, cancel context.CancelFunc, err error) {
	u := *c.base
	u.Path += r.path
	u.RawQuery = r.query.Encode()
	var body io.Reader
	if r.body != nil {
		raw, err := json.Marshal(r.body)
		if err != nil {
			return nil, nil, err
		}
		body = bytes.NewReader(raw)
	}
	if r.unbounded || c.timeout <= 0 {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "fangd-cli/"+version)
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err = c.http.Do(req)
	if err != nil {
		cancel()
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil, nil, err
		}
		return nil, nil, &unreachableError{base: c.base.String(), from: c.from, err: transportCause(err)}
	}
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		return nil, nil, readServerError(r.method, u.Path, resp)
	}
	return resp, cancel, nil
}

// transportCause drops the *url.Error wrapping (method and URL are said
// by the message around it).
func transportCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no answer in time (--timeout): %w", err)
	}
	return err
}

func readServerError(method, path string, resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &serverError{Method: method, Path: path, Status: resp.StatusCode}
	var env struct {
		Error     any    `json:"error"`
		Code      string `json:"code"`
		RequestID string `json:"request_id"`
	}
	if json.Unmarshal(raw, &env) == nil {
		e.Code, e.RequestID = env.Code, env.RequestID
		switch v := env.Error.(type) {
		case string:
			e.Message = v
		case map[string]any: // a JSON-RPC-style {"error": {"message": ...}}
			if m, ok := v["message"].(string); ok {
				e.Message = m
			}
		}
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(raw))
		if len(e.Message) > 300 {
			e.Message = e.Message[:300] + "…"
		}
	}
	return e
}

// call makes a bounded request and returns the whole body of its 2xx answer.
func (c *client) call(ctx context.Context, r request) ([]byte, error) {
	resp, cancel, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &unreachableError{base: c.base.String(), from: c.from, err: transportCause(err)}
	}
	return raw, nil
}

// get calls GET path and decodes the answer into v (when not nil); it
// returns the raw answer for --json.
func (c *client) get(ctx context.Context, path string, query url.Values, v any) ([]byte, error) {
	raw, err := c.call(ctx, request{method: "GET", path: path, query: query})
	if err != nil {
		return nil, err
	}
	return raw, decodeAnswer(raw, v)
}

func decodeAnswer(raw []byte, v any) error {
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("the server's answer is not the JSON expected: %w", err)
	}
	return nil
}

// printRaw writes the server's JSON as is, ending in one newline.
func printRaw(w io.Writer, raw []byte) {
	w.Write(bytes.TrimRight(raw, "\n"))
	io.WriteString(w, "\n")
}

// pathEscape makes one path segment of a user-given name or id.
func pathEscape(s string) string { return url.PathEscape(s) }

// getPage fetches one page of a list into v. With --json it prints the
// server's answer as is and reports printed, leaving the table to the
// caller otherwise.
func getPage(cmd *cobra.Command, o *clientOptions, path string, p *pageFlags, v any) (c *client, printed bool, err error) {
	c, err = newClient(o)
	if err != nil {
		return nil, false, err
	}
	printed, err = c.fetch(cmd, request{method: "GET", path: path, query: p.query()}, v)
	return c, printed, err
}

// fetch makes one call for a verb's answer: with --json it prints the
// server's answer as is and reports printed, otherwise it decodes the
// answer into v for the caller to print.
func (c *client) fetch(cmd *cobra.Command, r request, v any) (printed bool, err error) {
	raw, err := c.call(cmd.Context(), r)
	if err != nil {
		return false, err
	}
	if c.json {
		printRaw(stdout(cmd), raw)
		return true, nil
	}
	return false, decodeAnswer(raw, v)
}

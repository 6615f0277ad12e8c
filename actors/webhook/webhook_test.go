package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
	"github.com/fangd/fangd/store/storetest"
	"github.com/fangd/fangd/transport/ssrf"
)

// receiver is a webhook consumer written from the Standard Webhooks spec,
// independently of the engine's signer: it verifies webhook-signature
// (HMAC-SHA256 over "id.timestamp.body", base64, "v1," prefix, possibly
// several space-separated), the timestamp tolerance, LibreFang's
// X-Webhook-Signature, and counts deliveries per webhook-id.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	key    []byte // HMAC key for the standard signature
	legacy []byte // key for X-Webhook-Signature

	mu      sync.Mutex
	script  []int // status codes to answer, in order; then 200
	headers map[int]map[string]string
	got     []delivery // accepted (2xx) deliveries, in order
	seen    map[string]int
	bad     []string
	calls   int
}

type delivery struct {
	id   string
	body map[string]any
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, seen: map[string]int{}, headers: map[int]map[string]string{}}
	if secret != "" {
		r.legacy = []byte(secret)
		if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
			r.key, _ = base64.StdEncoding.DecodeString(rest)
		} else {
			r.key = []byte(secret)
		}
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
	if err := r.verify(id, ts, req.Header.Get("webhook-signature"), req.Header.Get("X-Webhook-Signature"), body); err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if req.Header.Get("Content-Type") != "application/json" {
		r.bad = append(r.bad, "content type "+req.Header.Get("Content-Type"))
	}
	status := 200
	if len(r.script) > 0 {
		status, r.script = r.script[0], r.script[1:]
	}
	for k, v := range r.headers[status] {
		w.Header().Set(k, v)
	}
	if status == http.StatusFound {
		w.Header().Set("Location", "http://169.254.169.254/")
	}
	w.WriteHeader(status)
	if status >= 200 && status < 300 {
		var b map[string]any
		if err := json.Unmarshal(body, &b); err != nil {
			r.bad = append(r.bad, "body is not JSON")
		}
		r.seen[id]++
		r.got = append(r.got, delivery{id: id, body: b})
	}
}

func (r *receiver) verify(id, ts, sig, legacy string, body []byte) error {
	if id == "" || ts == "" {
		return fmt.Errorf("missing webhook-id or webhook-timestamp")
	}
	if r.key == nil {
		if sig != "" || legacy != "" {
			return fmt.Errorf("unsigned endpoint got a signature")
		}
		return nil
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	if d := time.Since(time.Unix(secs, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp outside tolerance")
	}
	mac := hmac.New(sha256.New, r.key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	ok := false
	for _, part := range strings.Fields(sig) {
		v, b64, found := strings.Cut(part, ",")
		if !found || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && subtle.ConstantTimeCompare(got, want) == 1 {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("webhook-signature does not verify")
	}
	lm := hmac.New(sha256.New, r.legacy)
	lm.Write(body)
	if legacy != "sha256="+hex.EncodeToString(lm.Sum(nil)) {
		return fmt.Errorf("X-Webhook-Signature does not verify")
	}
	return nil
}

func (r *receiver) setScript(codes ...int) {
	r.mu.Lock()
	r.script = codes
	r.mu.Unlock()
}

func (r *receiver) delivered() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func (r *receiver) check() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Fatalf("receiver rejected deliveries: %v", r.bad)
	}
	for id, n := range r.seen {
		if n > 1 {
			r.t.Fatalf("webhook-id %s acknowledged %d times", id, n)
		}
	}
}

type env struct {
	home string
	db   *store.DB
	k    *kernel.Kernel
	bus  *comms.Bus
	eng  *Engine
}

var fastBackoff = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}

func start(t testing.TB, home string, opts Options) *env {
	t.Helper()
	db, vault := storetest.OpenWithVault(t, home)
	k := kernel.New(zerolog.Nop())
	bus, err := comms.Start(k, db, comms.BusOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Bus, opts.Vault = bus, vault
	if opts.Guard == nil {
		opts.Guard, _ = ssrf.New([]string{"127.0.0.1/32"})
	}
	if opts.Backoff == nil {
		opts.Backoff = fastBackoff
	}
	eng, err := Start(k, db, opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{home: home, db: db, k: k, bus: bus, eng: eng}
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	if e.db != nil {
		kerneltest.Stop(e.k, e.db)
		e.db = nil
	}
}

func ptr[T any](v T) *T { return &v }

func (e *env) create(t *testing.T, url, secret string, events ...string) View {
	t.Helper()
	p := Patch{Name: ptr("test"), URL: ptr(url), Events: &events}
	if secret != "" {
		p.Secret = ptr(secret)
	}
	var v View
	var err error
	// The engine answers 503 for the moment it takes to start.
	kerneltest.WaitFor(t, "condition", func() bool {
		v, err = e.eng.Create(context.Background(), KindOutbound, p)
		de := kernel.AsError(err)
		return de == nil || de.Kind != kernel.KindUnavailable
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *env) publish(t *testing.T, n int, typ string) {
	t.Helper()
	for i := range n {
		if _, err := e.bus.PublishSync(context.Background(), typ, "system", "", map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
}

// settled waits until endpoint id's outbox is empty (its last outcome is
// durable and reported).
func (e *env) settled(t *testing.T, id string) {
	t.Helper()
	kerneltest.WaitFor(t, "condition", func() bool {
		v, err := e.eng.Get(context.Background(), "", id)
		return err == nil && v.Pending == 0
	})
}

func eventN(d delivery) int {
	data := d.body["data"].(map[string]any)
	return int(data["detail"].(map[string]any)["n"].(float64))
}

func TestSignedDeliveryInOrderExactlyOnce(t *testing.T) {
	rcv := newReceiver(t, "whsec_"+base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	e := start(t, t.TempDir(), Options{})
	v := e.create(t, rcv.srv.URL+"/hook", "whsec_"+base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")), "hook.*")
	if *v.Secret != "***" || !v.HasSecret {
		t.Fatalf("secret shown: %+v", v)
	}
	e.publish(t, 5, "agent.spawned") // not subscribed
	e.publish(t, 50, "hook.wake")
	kerneltest.WaitFor(t, "condition", func() bool { return len(rcv.delivered()) == 50 })
	e.settled(t, v.ID)
	rcv.check()
	for i, d := range rcv.delivered() {
		if eventN(d) != i || d.body["type"] != "hook.wake" || d.body["timestamp"] == nil {
			t.Fatalf("delivery %d: %+v", i, d.body)
		}
	}
	att, err := e.eng.Deliveries(context.Background(), v.ID, 100)
	if err != nil || len(att) != 50 || att[0].Outcome != "delivered" || att[0].StatusCode != 200 || att[0].EventType != "hook.wake" {
		t.Fatalf("deliveries: %d %+v %v", len(att), att[0], err)
	}
}

// deliverThroughScript publishes one hook.wake to a new endpoint at rcv
// (with secret, subscribed to events) and waits until rcv has it and the
// outbox has settled, through whatever failures rcv's script answers
// first; it returns the engine and the attempts, newest first.
func deliverThroughScript(t *testing.T, rcv *receiver, secret string, events ...string) (*env, []Attempt) {
	t.Helper()
	e := start(t, t.TempDir(), Options{})
	v := e.create(t, rcv.srv.URL, secret, events...)
	e.publish(t, 1, "hook.wake")
	kerneltest.WaitFor(t, "condition", func() bool { return len(rcv.delivered()) == 1 })
	e.settled(t, v.ID)
	rcv.check()
	att, _ := e.eng.Deliveries(context.Background(), v.ID, 10)
	return e, att
}

func TestLegacySecretAndRetriesKeepWebhookID(t *testing.T) {
	rcv := newReceiver(t, "plain-librefang-secret")
	rcv.setScript(500, 503, 200)
	e, att := deliverThroughScript(t, rcv, "plain-librefang-secret", "*")
	if len(att) != 3 {
		t.Fatalf("attempts %+v", att)
	}
	// Newest first: delivered on the third attempt, same message id.
	if att[0].Outcome != "delivered" || att[1].Outcome != "retrying" || att[2].StatusCode != 500 || att[1].StatusCode != 503 {
		t.Fatalf("attempts %+v", att)
	}
	if att[0].MessageID != att[2].MessageID || att[0].MessageID != rcv.delivered()[0].id || att[0].Attempt != 3 {
		t.Fatalf("webhook-id not stable across retries: %+v", att)
	}
	// Failures were published, but never delivered to the endpoint itself.
	q, _ := e.bus.Query(context.Background(), comms.Query{Limit: 10, Type: "webhook.delivery_failed"})
	if len(q.Events) != 2 {
		t.Fatalf("%d delivery_failed events", len(q.Events))
	}
	for _, d := range rcv.delivered() {
		if strings.HasPrefix(d.body["type"].(string), "webhook.") {
			t.Fatalf("endpoint got an event about itself: %v", d.body["type"])
		}
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	rcv := newReceiver(t, "")
	rcv.setScript(429)
	rcv.headers[429] = map[string]string{"Retry-After": "1"}
	_, att := deliverThroughScript(t, rcv, "", "hook.wake")
	first := att[1]
	at, _ := time.Parse(time.RFC3339Nano, first.At)
	next, _ := time.Parse(time.RFC3339Nano, first.NextAttemptAt)
	// The schedule says ~10 ms; the receiver asked for 1 s.
	if first.StatusCode != 429 || next.Sub(at) < time.Second {
		t.Fatalf("Retry-After ignored: %+v", first)
	}
}

func TestGoneDisablesEndpointUntilReenabled(t *testing.T) {
	rcv := newReceiver(t, "")
	rcv.setScript(410)
	e := start(t, t.TempDir(), Options{})
	v := e.create(t, rcv.srv.URL, "", "hook.wake")
	e.publish(t, 1, "hook.wake")
	kerneltest.WaitFor(t, "condition", func() bool {
		got, _ := e.eng.Get(context.Background(), "", v.ID)
		return !got.Enabled
	})
	got, _ := e.eng.Get(context.Background(), KindOutbound, v.ID)
	if got.DisabledReason == "" || got.Pending != 1 {
		t.Fatalf("after 410: %+v", got)
	}
	kerneltest.WaitFor(t, "condition", func() bool {
		q, _ := e.bus.Query(context.Background(), comms.Query{Limit: 10, Type: "webhook.disabled"})
		return len(q.Events) == 1
	})
	// While disabled, new events are not queued.
	e.publish(t, 3, "hook.wake")
	got, _ = e.eng.Get(context.Background(), KindOutbound, v.ID)
	if got.Pending != 1 {
		t.Fatalf("disabled endpoint queued events: %+v", got)
	}
	if _, err := e.eng.Update(context.Background(), KindOutbound, v.ID, Patch{Enabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	kerneltest.WaitFor(t, "condition", func() bool { return len(rcv.delivered()) == 1 })
	rcv.check()
}

func TestPersistentFailureDeadLettersDisablesAndReplays(t *testing.T) {
	rcv := newReceiver(t, "")
	fail := make([]int, 8)
	for i := range fail {
		fail[i] = 500
	}
	fail[0] = http.StatusFound // a redirect is a failure, never followed
	rcv.setScript(fail...)
	e := start(t, t.TempDir(), Options{DisableAfter: 2})
	v := e.create(t, rcv.srv.URL, "", "hook.wake")
	e.publish(t, 3, "hook.wake")
	// 2 messages x 4 attempts = 8 failures, then disabled: the third waits.
	kerneltest.WaitFor(t, "condition", func() bool {
		got, _ := e.eng.Get(context.Background(), "", v.ID)
		return !got.Enabled && got.DeadLetters == 2
	})
	got, _ := e.eng.Get(context.Background(), "", v.ID)
	if got.Pending != 1 || !strings.Contains(got.DisabledReason, "2 consecutive") {
		t.Fatalf("endpoint %+v", got)
	}
	dls, err := e.eng.DeadLetters(context.Background(), v.ID, 10)
	if err != nil || len(dls) != 2 || dls[0].Attempts != 4 || dls[1].LastStatus != 500 {
		t.Fatalf("dead letters %+v %v", dls, err)
	}
	att, _ := e.eng.Deliveries(context.Background(), v.ID, 100)
	if att[len(att)-1].StatusCode != http.StatusFound || !strings.Contains(att[len(att)-1].Error, "redirect") {
		t.Fatalf("first attempt %+v", att[len(att)-1])
	}
	// Replay one by id; unknown ids are reported.
	res, err := e.eng.Replay(context.Background(), v.ID, []string{dls[1].MessageID, "msg_nope"})
	if err != nil || res.Replayed != 1 || len(res.Missing) != 1 {
		t.Fatalf("replay %+v %v", res, err)
	}
	if _, err := e.eng.Update(context.Background(), "", v.ID, Patch{Enabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	kerneltest.WaitFor(t, "condition", func() bool { return len(rcv.delivered()) == 2 })
	res, _ = e.eng.Replay(context.Background(), v.ID, nil)
	if res.Replayed != 1 {
		t.Fatalf("replay all: %+v", res)
	}
	kerneltest.WaitFor(t, "condition", func() bool { return len(rcv.delivered()) == 3 })
	rcv.check()
	// In order: the pending third message first, then the replays in turn.
	ns := []int{}
	for _, d := range rcv.delivered() {
		ns = append(ns, eventN(d))
	}
	if fmt.Sprint(ns) != "[2 0 1]" {
		t.Fatalf("delivery order %v", ns)
	}
	if rcv.delivered()[1].id != dls[1].MessageID {
		t.Fatal("replay changed the webhook-id")
	}
}

func TestRestartResumesPendingDeliveries(t *testing.T) {
	home := t.TempDir()
	rcv := newReceiver(t, "s3cret-value")
	down := make([]int, 100000)
	for i := range down {
		down[i] = 503
	}
	rcv.setScript(down...)
	slow := make([]time.Duration, 50)
	for i := range slow {
		slow[i] = 200 * time.Millisecond
	}
	e := start(t, home, Options{Backoff: slow})
	v := e.create(t, rcv.srv.URL, "s3cret-value", "hook.wake")
	e.publish(t, 200, "hook.wake")
	kerneltest.WaitFor(t, "condition", func() bool {
		got, _ := e.eng.Get(context.Background(), "", v.ID)
		return got.Pending == 200
	})
	e.stop()
	rcv.setScript()

	e = start(t, home, Options{Backoff: slow})
	kerneltest.WaitFor(t, "condition", func() bool { return len(rcv.delivered()) == 200 })
	e.settled(t, v.ID)
	rcv.check()
	for i, d := range rcv.delivered() {
		if eventN(d) != i {
			t.Fatalf("delivery %d carries event %d", i, eventN(d))
		}
	}
	got, _ := e.eng.Get(context.Background(), "", v.ID)
	if got.Pending != 0 || got.DeadLetters != 0 {
		t.Fatalf("after delivery: %+v", got)
	}
}

func TestBadInputIsRefusedAndNothingStored(t *testing.T) {
	res := fakeResolver{"internal.example": "10.1.2.3", "public.example": "93.184.216.34"}
	guard, _ := ssrf.New(nil, ssrf.WithResolver(res))
	e := start(t, t.TempDir(), Options{Guard: guard})
	ctx := context.Background()
	kerneltest.WaitFor(t, "condition", func() bool { _, err := e.eng.List(context.Background(), ""); return err == nil })
	cases := []struct {
		p    Patch
		code string
	}{
		{Patch{Name: ptr("x"), URL: ptr("ftp://public.example/"), Events: &[]string{"*"}}, "url_not_allowed"},
		{Patch{Name: ptr("x"), URL: ptr("not a url"), Events: &[]string{"*"}}, "invalid_url"},
		{Patch{Name: ptr("x"), URL: ptr("http://internal.example/"), Events: &[]string{"*"}}, "url_not_allowed"},
		{Patch{Name: ptr("x"), URL: ptr("http://127.0.0.1:9/"), Events: &[]string{"*"}}, "url_not_allowed"},
		{Patch{Name: ptr("x"), URL: ptr("http://[::ffff:169.254.169.254]/"), Events: &[]string{"*"}}, "url_not_allowed"},
		{Patch{Name: ptr("x"), URL: ptr("https://public.example/"), Events: &[]string{"agent.spwned"}}, "unknown_event_type"},
		{Patch{Name: ptr("x"), URL: ptr("https://public.example/"), Events: &[]string{}}, "invalid_input"},
		{Patch{Name: ptr("x"), URL: ptr("https://public.example/")}, "invalid_input"},
		{Patch{URL: ptr("https://public.example/"), Events: &[]string{"*"}}, "invalid_input"},
		{Patch{Name: ptr("x"), URL: ptr("https://public.example/"), Events: &[]string{"*"}, Secret: ptr("short")}, "invalid_input"},
		{Patch{Name: ptr("x"), URL: ptr("https://public.example/"), Events: &[]string{"*"}, Secret: ptr("whsec_%%%notbase64")}, "invalid_input"},
		{Patch{Name: ptr("x"), URL: ptr("https://public.example/"), Events: &[]string{"*"}, Headers: &map[string]string{"webhook-signature": "x"}}, "invalid_input"},
		{Patch{Name: ptr("x"), URL: ptr("https://public.example/"), Events: &[]string{"*"}, Headers: &map[string]string{"X-Ok": "a\r\nb"}}, "invalid_input"},
	}
	for i, c := range cases {
		_, err := e.eng.Create(ctx, KindOutbound, c.p)
		if de := kernel.AsError(err); de == nil || de.Code != c.code {
			t.Errorf("case %d: %v, want %s", i, err, c.code)
		}
	}
	if l, _ := e.eng.List(context.Background(), ""); len(l) != 0 {
		t.Fatalf("bad input stored %d endpoints", len(l))
	}
	v, err := e.eng.Create(ctx, KindEvent, Patch{URL: ptr("https://public.example/"), Events: &[]string{"agent_spawned"},
		Headers: &map[string]string{"Authorization": "Bearer hunter2"}})
	if err != nil {
		t.Fatal(err)
	}
	if v.EventType != "agent.spawned" || v.Headers["Authorization"] != "***" || v.Secret != nil {
		t.Fatalf("view %+v", v)
	}
	raw, _ := json.Marshal(v)
	if strings.Contains(string(raw), "hunter2") {
		t.Fatal("header value leaked")
	}
	if _, err := e.eng.Get(context.Background(), KindOutbound, v.ID); kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatal("event webhook visible as an outbound webhook")
	}
	if _, err := e.eng.Update(ctx, KindEvent, v.ID, Patch{URL: ptr("http://internal.example/")}); kernel.AsError(err).Code != "url_not_allowed" {
		t.Fatalf("update to a private url: %v", err)
	}
	if err := e.eng.Delete(context.Background(), KindEvent, "nope"); kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatal("delete unknown")
	}
	if err := e.eng.Delete(context.Background(), KindEvent, v.ID); err != nil {
		t.Fatal(err)
	}
	if l, _ := e.eng.List(context.Background(), ""); len(l) != 0 {
		t.Fatal("delete did not delete")
	}
}

type fakeResolver map[string]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ip, ok := f[host]
	if !ok {
		return nil, fmt.Errorf("no such host")
	}
	return []netip.Addr{netip.MustParseAddr(ip)}, nil
}

func TestTestEndpoint(t *testing.T) {
	rcv := newReceiver(t, "test-secret-1")
	rcv.setScript(204)
	e := start(t, t.TempDir(), Options{})
	v := e.create(t, rcv.srv.URL, "test-secret-1", "hook.wake")
	res, err := e.eng.Test(context.Background(), v.ID)
	if err != nil || res.Status != "sent" || res.ResponseStatus != 204 {
		t.Fatalf("test %+v %v", res, err)
	}
	rcv.check()
	if d := rcv.delivered(); len(d) != 1 || d[0].body["type"] != "webhook.test" {
		t.Fatalf("test payload %+v", d)
	}
	rcv.srv.Close()
	_, err = e.eng.Test(context.Background(), v.ID)
	if de := kernel.AsError(err); de == nil || de.Kind != kernel.KindUpstream {
		t.Fatalf("test to a dead receiver: %v", err)
	}
	if _, err := e.eng.Test(context.Background(), "nope"); kernel.AsError(err).Kind != kernel.KindNotFound {
		t.Fatal("test unknown")
	}
}

package pairing

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store/storetest"
)

// fakePusher records what the engine would be asked to do.
type fakePusher struct {
	mu      sync.Mutex
	created map[string]string // id -> url
	pushed  map[string][][]byte
	n       int
	fail    bool
}

func (f *fakePusher) CreatePush(_ context.Context, name, url, _ string, _ map[string]string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return "", kernel.Invalid("refused")
	}
	f.n++
	id := "ep" + string(rune('0'+f.n))
	f.created[id] = url
	return id, nil
}

func (f *fakePusher) Push(_ context.Context, id, _, _ string, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.created[id]; !ok {
		return kernel.NotFound("no endpoint")
	}
	f.pushed[id] = append(f.pushed[id], body)
	return nil
}

func (f *fakePusher) PushRaw(ctx context.Context, id, msgID, typ string, body []byte, _ map[string]string) error {
	return f.Push(ctx, id, msgID, typ, body)
}

func (f *fakePusher) DeletePush(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.created, id)
	return nil
}

type harness struct {
	p     *Pairing
	push  *fakePusher
	now   *atomic.Int64
	home  string
	stop  func()
	cfg   Config
	start func() *Pairing
}

func newHarness(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	h := &harness{push: &fakePusher{created: map[string]string{}, pushed: map[string][][]byte{}}, now: &atomic.Int64{}, home: t.TempDir()}
	h.now.Store(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixNano())
	h.cfg = DefaultConfig()
	h.cfg.Enabled = true
	if mutate != nil {
		mutate(&h.cfg)
	}
	h.start = func() *Pairing {
		db, vault := storetest.OpenWithVault(t, h.home)
		k := kernel.New(zerolog.Nop())
		p, err := Start(k, db, Options{Config: h.cfg, Push: h.push, Vault: vault, BaseURL: "http://127.0.0.1:4545",
			Now: func() time.Time { return time.Unix(0, h.now.Load()) }})
		if err != nil {
			t.Fatal(err)
		}
		h.stop = func() {
			kerneltest.Stop(k, db)
		}
		h.p = p
		return p
	}
	h.start()
	t.Cleanup(func() { h.stop() })
	return h
}

func (h *harness) advance(d time.Duration) { h.now.Add(int64(d)) }

func (h *harness) restart() {
	h.stop()
	h.start()
}

func kindOf(err error) kernel.Kind {
	if e := kernel.AsError(err); e != nil {
		return e.Kind
	}
	return -1
}

func codeOf(err error) string {
	var e *kernel.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestCodeShapeAndAlphabet(t *testing.T) {
	for range 200 {
		c := newCode()
		if len(c) != 7 || c[3] != '-' {
			t.Fatalf("code %q is not XXX-XXX", c)
		}
		for _, r := range strings.ReplaceAll(c, "-", "") {
			if !strings.ContainsRune(codeAlphabet, r) {
				t.Fatalf("code %q has %q outside the alphabet", c, r)
			}
		}
	}
	if strings.ContainsAny(codeAlphabet, "01OIL") {
		t.Fatal("the alphabet has lookalikes")
	}
	if codeHash("xk9-47b") != codeHash("XK947B") {
		t.Fatal("case and dash must not matter")
	}
}

func TestPairRevokeAndSurviveRestart(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	code, err := h.p.Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	paired, err := h.p.Complete(ctx, CompleteRequest{Code: strings.ToLower(code.Code), Name: "phone", Platform: "android",
		Push: &Target{Type: TargetNtfy, Server: "http://127.0.0.1:1", Topic: "t1"}, SourceIP: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := h.p.Authenticate([]byte(paired.DeviceToken)); !ok || id != paired.DeviceID {
		t.Fatalf("token does not authenticate: %v %q", ok, id)
	}
	// Single use.
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: code.Code, SourceIP: "10.0.0.1"}); codeOf(err) != "invalid_pairing_code" {
		t.Fatalf("reused code: %v", err)
	}
	// A pending code, the device and its token survive a restart.
	code2, err := h.p.Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h.restart()
	if id, ok := h.p.Authenticate([]byte(paired.DeviceToken)); !ok || id != paired.DeviceID {
		t.Fatal("device token lost on restart")
	}
	devs, err := h.p.Devices(ctx)
	if err != nil || len(devs) != 1 || devs[0].Name != "phone" || devs[0].Push == nil || devs[0].Push.Topic != "t1" {
		t.Fatalf("devices after restart: %+v %v", devs, err)
	}
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: code2.Code, Name: "tablet", SourceIP: "10.0.0.2"}); err != nil {
		t.Fatalf("pending code lost on restart: %v", err)
	}
	// Revocation: the token stops at once, and after a restart too.
	if _, err := h.p.Revoke(ctx, paired.DeviceID); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.p.Authenticate([]byte(paired.DeviceToken)); ok {
		t.Fatal("revoked token still authenticates")
	}
	if len(h.push.created) != 0 {
		t.Fatalf("push endpoint not deleted: %v", h.push.created)
	}
	h.restart()
	if _, ok := h.p.Authenticate([]byte(paired.DeviceToken)); ok {
		t.Fatal("revoked token authenticates after restart")
	}
	if _, err := h.p.Revoke(ctx, paired.DeviceID); kindOf(err) != kernel.KindNotFound {
		t.Fatalf("second revoke: %v", err)
	}
}

func TestCodesExpireAndPendingIsCapped(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxPending = 2 })
	ctx := context.Background()
	c1, _ := h.p.Request(ctx)
	if _, err := h.p.Request(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.p.Request(ctx); codeOf(err) != "too_many_pending" {
		t.Fatalf("third pending code: %v", err)
	}
	h.advance(5*time.Minute + time.Second)
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: c1.Code, SourceIP: "10.0.0.1"}); codeOf(err) != "invalid_pairing_code" {
		t.Fatalf("expired code: %v", err)
	}
	// Expired codes no longer count against the cap.
	if _, err := h.p.Request(ctx); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

func TestWrongCodesLockOutAndBurn(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LockoutAfter = 3; c.BurnAfter = 5 })
	ctx := context.Background()
	good, _ := h.p.Request(ctx)
	for i := range 2 {
		if _, err := h.p.Complete(ctx, CompleteRequest{Code: "AAA-AAA", SourceIP: "10.0.0.9"}); codeOf(err) != "invalid_pairing_code" {
			t.Fatalf("wrong code %d: %v", i, err)
		}
	}
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: "AAA-AAA", SourceIP: "10.0.0.9"}); codeOf(err) != "pairing_locked" {
		t.Fatalf("third wrong code: %v", err)
	}
	// Locked out even with the right code, and nothing is consumed.
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: good.Code, SourceIP: "10.0.0.9"}); codeOf(err) != "pairing_locked" {
		t.Fatalf("locked address with the right code: %v", err)
	}
	// Another address is not locked; the lock lifts after LockoutFor.
	h.advance(16 * time.Minute)
	good, _ = h.p.Request(ctx)
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: good.Code, SourceIP: "10.0.0.9", Name: "x"}); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
	// Guesses spread over addresses void every pending code.
	victim, _ := h.p.Request(ctx)
	for i := range 5 {
		h.p.Complete(ctx, CompleteRequest{Code: "BBB-BBB", SourceIP: "10.1.0." + string(rune('0'+i))})
	}
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: victim.Code, SourceIP: "10.2.0.1"}); codeOf(err) != "invalid_pairing_code" {
		t.Fatalf("pending code survived a distributed guess: %v", err)
	}
}

func TestMaxDevicesAndFailedPushReturnsTheCode(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxDevices = 1 })
	ctx := context.Background()
	c1, _ := h.p.Request(ctx)
	h.push.fail = true
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: c1.Code, SourceIP: "10.0.0.1",
		Push: &Target{Type: TargetWebhook, URL: "http://127.0.0.1:9/hook"}}); err == nil {
		t.Fatal("a refused push target paired anyway")
	}
	h.push.fail = false
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: c1.Code, SourceIP: "10.0.0.1"}); err != nil {
		t.Fatalf("the code was not given back: %v", err)
	}
	if _, err := h.p.Request(ctx); codeOf(err) != "max_devices" {
		t.Fatalf("request beyond max_devices: %v", err)
	}
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: "x", Push: &Target{Type: TargetWebPush, URL: "https://push.example/x", P256DH: "AAAA", AuthSecret: "AAAA"}}); kindOf(err) != kernel.KindInvalid {
		t.Fatalf("webpush with bad keys: %v", err)
	}
}

func TestActionTokensAreSingleUseExpiringAndDieWithTheDevice(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	code, _ := h.p.Request(ctx)
	d, err := h.p.Complete(ctx, CompleteRequest{Code: code.Code, SourceIP: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(0, h.now.Load())
	mk := func(exp time.Time) string {
		return signAction(h.p.key, actionClaims{Approval: "ap-1", Decision: "approve", Device: d.DeviceID, Exp: exp.Unix(), JTI: "j-" + exp.String()})
	}
	tok := mk(now.Add(time.Minute))
	c, err := h.p.Action(ctx, tok)
	if err != nil || !c.Approve || c.ApprovalID != "ap-1" || c.DeviceID != d.DeviceID {
		t.Fatalf("action: %+v %v", c, err)
	}
	h.restart()
	if _, err := h.p.Action(ctx, tok); codeOf(err) != "action_used" {
		t.Fatalf("reused action after restart: %v", err)
	}
	if _, err := h.p.Action(ctx, mk(now.Add(-time.Second))); codeOf(err) != "invalid_action_token" {
		t.Fatalf("expired action: %v", err)
	}
	forged := tok[:len(tok)-2] + "AA"
	if _, err := h.p.Action(ctx, forged); codeOf(err) != "invalid_action_token" {
		t.Fatalf("forged action: %v", err)
	}
	fresh := mk(now.Add(2 * time.Minute))
	if _, err := h.p.Revoke(ctx, d.DeviceID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.p.Action(ctx, fresh); codeOf(err) != "invalid_action_token" {
		t.Fatalf("action of a revoked device: %v", err)
	}
}

func TestLockoutSurvivesRestart(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LockoutAfter = 3; c.BurnAfter = 6 })
	ctx := context.Background()
	wrong := func(ip string) error {
		_, err := h.p.Complete(ctx, CompleteRequest{Code: "AAA-AAA", SourceIP: ip})
		return err
	}
	// Two wrong codes, a restart, a third: the count was kept.
	wrong("10.0.0.9")
	wrong("10.0.0.9")
	h.restart()
	if err := wrong("10.0.0.9"); codeOf(err) != "pairing_locked" {
		t.Fatalf("third wrong code after a restart: %v", err)
	}
	// The lockout itself survives a restart, against the right code too.
	h.restart()
	good, _ := h.p.Request(ctx)
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: good.Code, SourceIP: "10.0.0.9", Name: "x"}); codeOf(err) != "pairing_locked" {
		t.Fatalf("lockout lifted by a restart: %v", err)
	}
	// The burn window too: 3 failures so far, 2 more, a restart, 1 more
	// voids every pending code.
	wrong("10.1.0.1")
	wrong("10.1.0.2")
	h.restart()
	wrong("10.1.0.3")
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: good.Code, SourceIP: "10.2.0.1", Name: "x"}); codeOf(err) != "invalid_pairing_code" {
		t.Fatalf("burn window forgotten on restart: %v", err)
	}
	// It lifts after LockoutFor, restart or not, and a success clears
	// the address's count.
	h.advance(16 * time.Minute)
	h.restart()
	good, _ = h.p.Request(ctx)
	if _, err := h.p.Complete(ctx, CompleteRequest{Code: good.Code, SourceIP: "10.0.0.9", Name: "x"}); err != nil {
		t.Fatalf("after the lockout ran out: %v", err)
	}
	wrong("10.0.0.9") // the success cleared the count: two are no lockout
	h.restart()
	if err := wrong("10.0.0.9"); codeOf(err) != "invalid_pairing_code" {
		t.Fatalf("count kept after a success: %v", err)
	}
}

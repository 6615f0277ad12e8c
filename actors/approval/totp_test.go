package approval

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"image/png"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/approval/approvaltest"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/store"
)

func totpPolicy() Policy {
	return policy(func(p *Policy) { p.SecondFactor = SecondFactorTOTP; p.MaxPendingPerAgent = 100 })
}

// enrol sets up and confirms TOTP and returns the secret and recovery
// codes; the clock then stands one step later.
func enrol(t *testing.T, h *harness) (string, []string) {
	t.Helper()
	me := api("api_key")
	e, err := h.a.TOTPSetup(context.Background(), "", me)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(e.OtpauthURI)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" {
		t.Fatalf("otpauth uri %q", e.OtpauthURI)
	}
	q := u.Query()
	if q.Get("secret") != e.Secret || q.Get("issuer") != "fangd" || q.Get("algorithm") != "SHA1" || q.Get("digits") != "6" || q.Get("period") != "30" {
		t.Fatalf("otpauth parameters %v", q)
	}
	if len(e.Secret) != 32 { // 160 bits in base32
		t.Fatalf("secret %q is not 160 bits", e.Secret)
	}
	raw, ok := strings.CutPrefix(e.QRCode, "data:image/png;base64,")
	if !ok {
		t.Fatalf("qr code %.40q", e.QRCode)
	}
	img, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := png.DecodeConfig(bytes.NewReader(img)); err != nil || cfg.Width != 256 {
		t.Fatalf("qr png: %v %+v", err, cfg)
	}
	if len(e.RecoveryCodes) != 8 {
		t.Fatalf("%d recovery codes", len(e.RecoveryCodes))
	}
	st, _ := h.a.TOTPStatus(context.Background())
	if !st.Enrolled || st.Confirmed || st.Enforced || !st.PendingConfirmation {
		t.Fatalf("status before confirmation %+v", st)
	}
	// A second setup while one awaits confirmation is a conflict.
	if _, err := h.a.TOTPSetup(context.Background(), "", me); err == nil {
		t.Fatal("second setup accepted")
	} else if k, _ := kindOf(err); k != kernel.KindConflict {
		t.Fatal(err)
	}
	if _, err := h.a.TOTPConfirm(context.Background(), "000000", me); err == nil {
		t.Fatal("a wrong confirmation code was accepted")
	}
	if _, err := h.a.TOTPConfirm(context.Background(), approvaltest.TOTP(t, e.Secret, h.clock.Now()), me); err != nil {
		t.Fatal(err)
	}
	st, _ = h.a.TOTPStatus(context.Background())
	if !st.Enrolled || !st.Confirmed || !st.Enforced || st.PendingConfirmation || st.RemainingRecoveryCodes != 8 || st.Scope != "totp" {
		t.Fatalf("status after confirmation %+v", st)
	}
	h.clock.Advance(30 * time.Second)
	return e.Secret, e.RecoveryCodes
}

func TestApprovingWithTOTP(t *testing.T) {
	c := kerneltest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, totpPolicy(), c)
	me := api("api_key")

	// Before enrolment nothing asks for a code.
	free := h.create("a1", "shell_exec")
	if !free.SecondFactorRequired {
		t.Fatal("the policy should want a second factor")
	}
	if rec, err := h.a.Decide(context.Background(), Decide{ID: free.ID, Approve: true, By: me}); err != nil || rec.SecondFactor != FactorNone {
		t.Fatalf("%+v %v", rec, err)
	}

	secret, recovery := enrol(t, h)
	a := h.create("a1", "shell_exec")
	for _, bad := range []struct{ code, want string }{
		{"", "totp_required"},
		{"12345", "totp_invalid"},
		{"abcdef", "totp_invalid"},
		{approvaltest.TOTP(t, secret, c.Now().Add(-90*time.Second)), "totp_invalid"},  // stale: three steps old
		{approvaltest.TOTP(t, secret, c.Now().Add(-30*time.Second)), "totp_replayed"}, // the confirmation's step
	} {
		_, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: bad.code, By: me})
		if k, code := kindOf(err); k != kernel.KindInvalid || code != bad.want {
			t.Fatalf("code %q: %v, want %s", bad.code, err, bad.want)
		}
	}
	if rec, _ := h.a.Get(context.Background(), a.ID); rec.Status != StatusPending {
		t.Fatal("a refused code changed the request")
	}
	// Rejecting needs no code.
	rej := h.create("a1", "shell_exec")
	if _, err := h.a.Decide(context.Background(), Decide{ID: rej.ID, Approve: false, By: me}); err != nil {
		t.Fatal(err)
	}
	// The clock one step ahead of the server is still accepted (skew).
	code := approvaltest.TOTP(t, secret, c.Now().Add(30*time.Second))
	rec, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: code, By: me})
	if err != nil || rec.Status != StatusApproved || rec.SecondFactor != FactorTOTP {
		t.Fatalf("%+v %v", rec, err)
	}
	// The same code, and any code of an older step, is refused once used.
	b := h.create("a1", "shell_exec")
	for _, old := range []string{code, approvaltest.TOTP(t, secret, c.Now())} {
		if _, err := h.a.Decide(context.Background(), Decide{ID: b.ID, Approve: true, Code: old, By: me}); err == nil {
			t.Fatalf("replayed code %s accepted", old)
		}
	}
	// A recovery code works once, in any case and with or without dashes.
	rc := strings.ToUpper(strings.ReplaceAll(recovery[3], "-", ""))
	if rec, err := h.a.Decide(context.Background(), Decide{ID: b.ID, Approve: true, Code: rc, By: me}); err != nil || rec.SecondFactor != FactorRecovery {
		t.Fatalf("recovery code: %+v %v", rec, err)
	}
	cc := h.create("a1", "shell_exec")
	if _, err := h.a.Decide(context.Background(), Decide{ID: cc.ID, Approve: true, Code: recovery[3], By: me}); err == nil {
		t.Fatal("a spent recovery code was accepted")
	}
	if st, _ := h.a.TOTPStatus(context.Background()); st.RemainingRecoveryCodes != 7 {
		t.Fatalf("remaining %d", st.RemainingRecoveryCodes)
	}
	// Actions outside totp_tools need no code.
	h.policyCheck(t)

	// The secret is in the vault, not in the store in the clear.
	if leaked := h.storeContains(secret); leaked {
		t.Fatal("the TOTP secret is readable in the store")
	}
}

func (h *harness) policyCheck(t *testing.T) {
	p := totpPolicy()
	p.TOTPTools = []string{"shell_*"}
	p.Validate()
	if !p.TOTPApplies("shell_exec") || p.TOTPApplies("file_write") {
		t.Fatal("totp_tools globs")
	}
	p.TOTPTools = nil
	if !p.TOTPApplies("file_write") {
		t.Fatal("empty totp_tools should cover every gated action")
	}
	p.SecondFactor = SecondFactorNone
	if p.TOTPApplies("file_write") {
		t.Fatal("second_factor none")
	}
}

func (h *harness) storeContains(s string) bool {
	found := false
	h.db.View(func(tx *store.Txn) error {
		return tx.Iterate(nil, nil, false, func(k, v []byte) (bool, error) {
			if bytes.Contains(v, []byte(s)) || bytes.Contains(k, []byte(s)) {
				found = true
			}
			return !found, nil
		})
	})
	return found
}

func TestLockoutAfterFiveBadCodes(t *testing.T) {
	c := kerneltest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, totpPolicy(), c)
	me := api("api_key")
	secret, recovery := enrol(t, h)
	a := h.create("a1", "shell_exec")
	for i := 0; i < MaxFailures-1; i++ {
		if _, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: "000000", By: me}); err == nil {
			t.Fatal("wrong code accepted")
		}
	}
	// The fifth failure locks: 429 with a Retry-After of five minutes.
	_, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: "000001", By: me})
	var ra interface{ RetryAfter() time.Duration }
	if k, code := kindOf(err); k != kernel.KindRateLimited || code != "totp_locked" || !errors.As(err, &ra) || ra.RetryAfter() != LockoutDuration {
		t.Fatalf("fifth failure: %v", err)
	}
	// Locked: even a good code or a recovery code is refused, on every
	// path that checks codes, and the lock survives a restart.
	h.restart()
	for _, try := range []func() error{
		func() error {
			_, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: approvaltest.TOTP(t, secret, c.Now()), By: me})
			return err
		},
		func() error {
			_, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: recovery[0], By: me})
			return err
		},
		func() error {
			_, err := h.a.TOTPRevoke(context.Background(), approvaltest.TOTP(t, secret, c.Now()), me)
			return err
		},
		func() error {
			_, err := h.a.TOTPSetup(context.Background(), approvaltest.TOTP(t, secret, c.Now()), me)
			return err
		},
	} {
		if k, _ := kindOf(try()); k != kernel.KindRateLimited {
			t.Fatal("a locked second factor accepted a code")
		}
	}
	if st, _ := h.a.TOTPStatus(context.Background()); st.LockedUntil == nil {
		t.Fatal("status does not show the lock")
	}
	c.Advance(LockoutDuration + time.Second)
	if rec, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: approvaltest.TOTP(t, secret, c.Now()), By: me}); err != nil || rec.Status != StatusApproved {
		t.Fatalf("after the lock: %+v %v", rec, err)
	}
	waitFor(t, "audited lockout", func() bool {
		n := 0
		for _, e := range h.auditTypes("") {
			switch e {
			case "totp_failed:denied", "totp_locked:denied":
				n++
			}
		}
		return n == MaxFailures+1 // the confirmation's wrong code too
	})
}

func TestReenrolAndRevoke(t *testing.T) {
	c := kerneltest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, totpPolicy(), c)
	me := api("api_key")
	if _, err := h.a.TOTPRevoke(context.Background(), "123456", me); err == nil {
		t.Fatal("revoke without enrolment")
	} else if k, code := kindOf(err); k != kernel.KindInvalid || code != "totp_not_enrolled" {
		t.Fatal(err)
	}
	if _, err := h.a.TOTPConfirm(context.Background(), "123456", me); err == nil {
		t.Fatal("confirm without enrolment")
	}
	secret, recovery := enrol(t, h)
	// Re-enrolling a confirmed secret needs a current code.
	if _, err := h.a.TOTPSetup(context.Background(), "", me); err == nil {
		t.Fatal("re-enrolment without a code")
	}
	next, err := h.a.TOTPSetup(context.Background(), approvaltest.TOTP(t, secret, c.Now()), me)
	if err != nil {
		t.Fatal(err)
	}
	// Until the new secret is confirmed the old one stays in force.
	c.Advance(30 * time.Second)
	a := h.create("a1", "shell_exec")
	if _, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: approvaltest.TOTP(t, next.Secret, c.Now()), By: me}); err == nil {
		t.Fatal("the unconfirmed secret approved")
	}
	if _, err := h.a.TOTPConfirm(context.Background(), approvaltest.TOTP(t, next.Secret, c.Now()), me); err != nil {
		t.Fatal(err)
	}
	c.Advance(30 * time.Second)
	if _, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, Code: approvaltest.TOTP(t, secret, c.Now()), By: me}); err == nil {
		t.Fatal("the replaced secret still approves")
	}
	// Old recovery codes died with the old secret; revoke with the new one.
	if _, err := h.a.TOTPRevoke(context.Background(), recovery[0], me); err == nil {
		t.Fatal("an old recovery code revoked")
	}
	if _, err := h.a.TOTPRevoke(context.Background(), next.RecoveryCodes[0], me); err != nil {
		t.Fatal(err)
	}
	st, _ := h.a.TOTPStatus(context.Background())
	if st.Enrolled || st.Confirmed || st.Enforced {
		t.Fatalf("after revoke %+v", st)
	}
	if rec, err := h.a.Decide(context.Background(), Decide{ID: a.ID, Approve: true, By: me}); err != nil || rec.SecondFactor != FactorNone {
		t.Fatalf("after revoke, approving needs no code: %+v %v", rec, err)
	}
	waitFor(t, "audit", func() bool {
		got := strings.Join(h.auditTypes(""), ",")
		return strings.Contains(got, "totp_setup:ok") && strings.Contains(got, "totp_confirmed:ok") && strings.Contains(got, "totp_revoked:ok")
	})
	for _, e := range h.auditEntries() {
		if strings.Contains(e.Details, secret) || strings.Contains(e.Details, next.Secret) || strings.Contains(e.Details, next.RecoveryCodes[1]) {
			t.Fatalf("a secret in the audit log: %+v", e)
		}
	}
}

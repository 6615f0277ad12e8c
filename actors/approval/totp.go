package approval

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"regexp"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// TOTP parameters (RFC 6238 as authenticator apps expect them and as
// LibreFang uses them): HMAC-SHA-1, 6 digits, 30 s steps, one step of
// clock skew either way, a 160-bit secret.
const (
	totpPeriod     = 30
	totpSkew       = 1
	totpSecretSize = 20
	totpAccount    = "approvals"

	recoveryCodes = 8

	// MaxFailures consecutive bad codes lock TOTP for LockoutDuration.
	MaxFailures     = 5
	LockoutDuration = 5 * time.Minute

	// maxTOTPRetries bounds the re-checks of a code whose enrolment
	// another cluster node changed meanwhile.
	maxTOTPRetries = 3
)

// Vault entries: the confirmed enrolment, and one awaiting confirmation
// (kept apart so re-enrolling does not switch the second factor off until
// the new secret is proven).
const (
	vaultActive  = "approvals/totp"
	vaultPending = "approvals/totp-pending"
)

// ---- what "approvals-totp" accepts ----

// TOTPSetup starts an enrolment. Answered with *Enrolment; 409 when one
// awaits confirmation; 400 when a confirmed enrolment exists and
// CurrentCode does not prove it.
type TOTPSetup struct {
	CurrentCode string
	Who         Decider
}

// Enrolment is the answer to TOTPSetup: the only time the secret and the
// recovery codes are shown.
type Enrolment struct {
	Secret        string   `json:"secret"`
	OtpauthURI    string   `json:"otpauth_uri"`
	QRCode        string   `json:"qr_code"`
	RecoveryCodes []string `json:"recovery_codes"`
	Message       string   `json:"message"`
}

// TOTPConfirm proves the pending enrolment with a code from the app.
// Answered with *TOTPResult.
type TOTPConfirm struct {
	Code string
	Who  Decider
}

// TOTPRevoke removes the enrolment (confirmed and pending) after a valid
// TOTP or recovery code. Answered with *TOTPResult.
type TOTPRevoke struct {
	Code string
	Who  Decider
}

// TOTPCancel drops the enrolment awaiting confirmation, without a code:
// its secret was shown once, in the setup answer, and if that answer was
// lost nobody can produce a code for it. Dropping it weakens nothing (a
// confirmed enrolment stays in force). Answered with *TOTPResult; 400
// totp_not_pending when none awaits confirmation.
type TOTPCancel struct {
	Who Decider
}

// TOTPResult answers TOTPConfirm, TOTPRevoke and TOTPCancel.
type TOTPResult struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// TOTPStatusQuery answers *TOTPStatus.
type TOTPStatusQuery struct{}

// TOTPStatus is GET /api/approvals/totp/status.
type TOTPStatus struct {
	// Enrolled: a secret exists (confirmed or awaiting confirmation).
	Enrolled  bool `json:"enrolled"`
	Confirmed bool `json:"confirmed"`
	// Enforced: approvals of TOTP-gated actions need a code now
	// (second_factor = "totp" and a confirmed secret).
	Enforced               bool       `json:"enforced"`
	Scope                  string     `json:"scope"` // the policy's second_factor
	PendingConfirmation    bool       `json:"pending_confirmation"`
	RemainingRecoveryCodes int        `json:"remaining_recovery_codes"`
	LockedUntil            *time.Time `json:"locked_until,omitempty"`
}

// verify checks a code for an approval. Answered with *verified, or a
// 400 (totp_required, totp_invalid, totp_replayed) or 429 error.
type verify struct {
	Code       string
	Who        Decider
	ApprovalID string
}

type verified struct {
	factor string // FactorNone when no confirmed enrolment exists
}

// enrolment is what the vault holds for one secret.
type enrolment struct {
	Secret    string    `json:"secret"` // base32
	Salt      string    `json:"salt"`   // hex, for the recovery hashes
	Recovery  []string  `json:"recovery"`
	LastStep  int64     `json:"last_step"` // the newest step accepted (replay guard)
	CreatedAt time.Time `json:"created_at"`
}

// guard is the lockout state, stored in the clear (it holds no secret) so
// a restart does not reset it.
type guard struct {
	Failures    int       `json:"failures"`
	LockedUntil time.Time `json:"locked_until"`
}

// totpActor is "approvals-totp". It never keeps a secret in memory
// between messages: each check opens the vault entry and wipes it after.
type totpActor struct {
	env *env
	// What it knows without opening the vault.
	active, pending bool
	remaining       int
	guard           guard
	// sec and guards are the vault and the node's store, or etcd in
	// cluster mode (totpcluster.go; cluster is then set).
	sec     totpSecrets
	guards  guardStore
	cluster *etcdSecrets
}

func (t *totpActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := t.load(); err != nil {
			panic(fmt.Errorf("approvals-totp: load: %w", err))
		}
	case *useTOTPCluster:
		c.Respond(t.moveToCluster(m.c))
		return
	}
	if err := t.refresh(); err != nil {
		c.Respond(err)
		return
	}
	switch m := c.Message().(type) {
	case *TOTPStatusQuery:
		c.Respond(t.status())
	case *TOTPSetup:
		t.setup(c, m)
	case *TOTPConfirm:
		t.confirm(c, m)
	case *TOTPRevoke:
		t.revoke(c, m)
	case *TOTPCancel:
		t.cancel(c, m)
	case *verify:
		t.verify(c, m, 0)
	}
}

func (t *totpActor) load() error {
	t.sec = t.env.vault
	t.guards = localGuards{store.NewCollection[guard](t.env.db, "approvals-totp-guard")}
	return t.loadState()
}

// loadState reads what the actor knows without a secret: the guard, which
// enrolments exist, how many recovery codes are left.
func (t *totpActor) loadState() error {
	g, err := t.guards.Get("state")
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	t.guard = g
	if t.active, err = t.sec.Has(vaultActive); err != nil {
		return err
	}
	if t.pending, err = t.sec.Has(vaultPending); err != nil {
		return err
	}
	t.remaining = 0
	if t.active {
		e, err := t.open(vaultActive)
		if err != nil {
			return err
		}
		t.remaining = len(e.Recovery)
		wipeEnrolment(&e)
	}
	return nil
}

func (t *totpActor) status() *TOTPStatus {
	pol := t.env.policy.Load()
	s := &TOTPStatus{Enrolled: t.active || t.pending, Confirmed: t.active, PendingConfirmation: t.pending,
		Enforced: t.active && pol.SecondFactor == SecondFactorTOTP, Scope: pol.SecondFactor,
		RemainingRecoveryCodes: t.remaining}
	if now := t.env.now(); now.Before(t.guard.LockedUntil) {
		until := t.guard.LockedUntil
		s.LockedUntil = &until
	}
	return s
}

// open decrypts one vault entry. The caller wipes it with wipeEnrolment.
func (t *totpActor) open(name string) (enrolment, error) {
	var e enrolment
	err := t.sec.With(name, func(secret []byte) error { return json.Unmarshal(secret, &e) })
	return e, err
}

func (t *totpActor) seal(name string, e *enrolment) error {
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return t.sec.Put(name, raw) // wipes raw
}

// wipeEnrolment drops the references to the secret; Go strings cannot be
// overwritten, so the secret's lifetime in memory is one message.
func wipeEnrolment(e *enrolment) { *e = enrolment{} }

// ---- the checks ----

var (
	totpCodeRe     = regexp.MustCompile(`^[0-9]{6}$`)
	recoveryCodeRe = regexp.MustCompile(`^[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}$`)
)

// matchTOTP finds the step (within the skew) whose code is code, comparing
// in constant time through the library. It returns -1 when none matches.
func matchTOTP(secret, code string, now time.Time) int64 {
	counter := now.Unix() / totpPeriod
	for _, step := range []int64{counter, counter - 1, counter + 1} {
		if step < 0 {
			continue
		}
		ok, err := hotp.ValidateCustom(code, uint64(step), secret, hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err == nil && ok {
			return step
		}
	}
	return -1
}

func recoveryHash(salt, code string) string {
	sum := sha256.Sum256([]byte(salt + ":" + normalizeRecovery(code)))
	return hex.EncodeToString(sum[:])
}

func normalizeRecovery(code string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(code)), "-", "")
}

// codeErrors are the refusals a check can give; each counts as a failure.
var (
	errTOTPRequired = kernel.Errorf(kernel.KindInvalid, "totp_required", "a TOTP code is required to approve this action (second_factor = totp): send {\"totp_code\": \"123456\"} or a recovery code")
	errTOTPInvalid  = kernel.Errorf(kernel.KindInvalid, "totp_invalid", "invalid TOTP or recovery code")
	errTOTPReplayed = kernel.Errorf(kernel.KindInvalid, "totp_replayed", "this TOTP code has already been used; wait for the next one")
)

// check tests code against e: a 6-digit TOTP code newer than the last one
// accepted, or (with allowRecovery) an unused recovery code. On success
// it updates e (last step, spent recovery code) for the caller to seal.
func check(e *enrolment, code string, allowRecovery bool, now time.Time) (string, error) {
	code = strings.TrimSpace(code)
	switch {
	case totpCodeRe.MatchString(code):
		step := matchTOTP(e.Secret, code, now)
		if step < 0 {
			return "", errTOTPInvalid
		}
		if step <= e.LastStep {
			return "", errTOTPReplayed
		}
		e.LastStep = step
		return FactorTOTP, nil
	case allowRecovery && recoveryCodeRe.MatchString(strings.ToLower(code)):
		h := recoveryHash(e.Salt, code)
		for i, stored := range e.Recovery {
			if subtle.ConstantTimeCompare([]byte(h), []byte(stored)) == 1 {
				e.Recovery = append(e.Recovery[:i:i], e.Recovery[i+1:]...)
				return FactorRecovery, nil
			}
		}
	}
	return "", errTOTPInvalid
}

// lockedError is the 429 of a locked second factor; the HTTP layer turns
// RetryAfter into the Retry-After header.
type lockedError struct {
	err  *kernel.Error
	wait time.Duration
}

func (l *lockedError) Error() string             { return l.err.Error() }
func (l *lockedError) Unwrap() error             { return l.err }
func (l *lockedError) RetryAfter() time.Duration { return l.wait }

func (t *totpActor) locked() error {
	now := t.env.now()
	if now.Before(t.guard.LockedUntil) {
		wait := t.guard.LockedUntil.Sub(now)
		return &lockedError{err: kernel.Errorf(kernel.KindRateLimited, "totp_locked",
			"too many invalid codes: TOTP verification is locked until %s", t.guard.LockedUntil.UTC().Format(time.RFC3339)), wait: wait}
	}
	return nil
}

// failed counts a bad code, locks after MaxFailures in a row, and audits
// both. It returns the error to answer (the lock's 429 when this failure
// locked it).
func (t *totpActor) failed(c actor.Context, purpose string, who Decider, cause error) error {
	var failures int
	lockedNow := false
	count := func(g *guard) {
		g.Failures++
		failures, lockedNow = g.Failures, g.Failures >= MaxFailures
		if lockedNow {
			g.LockedUntil = t.env.now().Add(LockoutDuration)
			g.Failures = 0
		}
	}
	g, err := t.guards.Update("state", count)
	if err != nil {
		// Not stored: this node still counts it (and locks) in memory.
		count(&t.guard)
	} else {
		t.guard = g
	}
	ev := audit.Event{EventType: "totp_failed", Outcome: "denied", Actor: who.Identity, SourceIP: who.SourceIP,
		Details: fmt.Sprintf("purpose=%s reason=%s failures=%d", purpose, kernel.AsError(cause).Code, failures)}
	var reply error = cause
	if lockedNow {
		ev.EventType = "totp_locked"
		ev.Details = fmt.Sprintf("purpose=%s %d invalid codes in a row; locked until %s", purpose, MaxFailures, t.guard.LockedUntil.UTC().Format(time.RFC3339))
		reply = t.locked()
	}
	if err != nil {
		reply = err
	}
	t.env.auditThenRespond(c, ev, reply)
	return reply
}

func (t *totpActor) succeeded() error {
	if t.guard.Failures == 0 {
		return nil
	}
	g, err := t.guards.Update("state", func(g *guard) { g.Failures = 0 })
	if err == nil {
		t.guard = g
	}
	return err
}

// ---- flows ----

func (t *totpActor) setup(c actor.Context, m *TOTPSetup) {
	if err := t.locked(); err != nil {
		c.Respond(err)
		return
	}
	if t.pending {
		c.Respond(kernel.Errorf(kernel.KindConflict, "totp_pending_confirmation",
			"a TOTP enrolment is awaiting confirmation: confirm it with POST /api/approvals/totp/confirm, or cancel it with DELETE /api/approvals/totp/setup"))
		return
	}
	if t.active {
		if strings.TrimSpace(m.CurrentCode) == "" {
			c.Respond(kernel.Errorf(kernel.KindInvalid, "totp_required", "TOTP is already enrolled: send {\"current_code\"} with a current code (or a recovery code) to enrol a new secret"))
			return
		}
		e, err := t.open(vaultActive)
		if err != nil {
			c.Respond(err)
			return
		}
		_, cerr := check(&e, m.CurrentCode, true, t.env.now())
		if cerr != nil {
			wipeEnrolment(&e)
			t.failed(c, "setup", m.Who, cerr)
			return
		}
		// The proof is spent: the same code cannot prove anything again.
		err = t.seal(vaultActive, &e)
		t.remaining = len(e.Recovery)
		wipeEnrolment(&e)
		if err == nil {
			err = t.succeeded()
		}
		if err != nil {
			c.Respond(err)
			return
		}
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: t.env.policy.Load().TOTPIssuer, AccountName: totpAccount,
		Period: totpPeriod, SecretSize: totpSecretSize, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1, Rand: rand.Reader})
	if err != nil {
		c.Respond(err)
		return
	}
	qr, err := qrDataURL(key)
	if err != nil {
		c.Respond(err)
		return
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		c.Respond(err)
		return
	}
	e := enrolment{Secret: key.Secret(), Salt: hex.EncodeToString(salt), CreatedAt: t.env.now().UTC()}
	codes := make([]string, recoveryCodes)
	for i := range codes {
		b := make([]byte, 8)
		if _, err := rand.Read(b); err != nil {
			c.Respond(err)
			return
		}
		h := hex.EncodeToString(b)
		codes[i] = h[0:4] + "-" + h[4:8] + "-" + h[8:12] + "-" + h[12:16]
		e.Recovery = append(e.Recovery, recoveryHash(e.Salt, codes[i]))
	}
	if err := t.seal(vaultPending, &e); err != nil {
		c.Respond(err)
		return
	}
	t.pending = true
	reply := &Enrolment{Secret: key.Secret(), OtpauthURI: key.URL(), QRCode: qr, RecoveryCodes: codes,
		Message: "Scan the QR code (or enter the secret) in an authenticator app, then confirm with POST /api/approvals/totp/confirm {\"code\"}. Store the recovery codes offline: each works once. Until you confirm, the previous state stays in force."}
	wipeEnrolment(&e)
	details := "new secret awaiting confirmation"
	if t.active {
		details = "re-enrolment awaiting confirmation; the current secret stays active until then"
	}
	t.env.auditThenRespond(c, audit.Event{EventType: "totp_setup", Outcome: "ok", Actor: m.Who.Identity, SourceIP: m.Who.SourceIP, Details: details}, reply)
}

// qrDataURL renders the otpauth URI as a PNG QR code in a data: URL.
func qrDataURL(key *otp.Key) (string, error) {
	img, err := key.Image(256, 256)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return "", err
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

func (t *totpActor) confirm(c actor.Context, m *TOTPConfirm) {
	if err := t.locked(); err != nil {
		c.Respond(err)
		return
	}
	if !t.pending {
		c.Respond(kernel.Errorf(kernel.KindInvalid, "totp_not_enrolled", "no TOTP enrolment awaits confirmation: start one with POST /api/approvals/totp/setup"))
		return
	}
	e, err := t.open(vaultPending)
	if err != nil {
		c.Respond(err)
		return
	}
	defer wipeEnrolment(&e)
	if _, cerr := check(&e, m.Code, false, t.env.now()); cerr != nil {
		t.failed(c, "confirm", m.Who, cerr)
		return
	}
	// The pending secret becomes the active one; its first code is spent.
	if err := t.seal(vaultActive, &e); err != nil {
		c.Respond(err)
		return
	}
	if err := t.sec.Delete(vaultPending); err != nil {
		c.Respond(err)
		return
	}
	t.active, t.pending, t.remaining = true, false, len(e.Recovery)
	if err := t.succeeded(); err != nil {
		c.Respond(err)
		return
	}
	t.env.auditThenRespond(c, audit.Event{EventType: "totp_confirmed", Outcome: "ok", Actor: m.Who.Identity, SourceIP: m.Who.SourceIP,
		Details: fmt.Sprintf("enforced=%t", t.env.policy.Load().SecondFactor == SecondFactorTOTP)},
		&TOTPResult{Status: "confirmed", Message: "TOTP is confirmed; approvals that need a second factor now ask for a code"})
}

func (t *totpActor) revoke(c actor.Context, m *TOTPRevoke) {
	if !t.active && !t.pending {
		c.Respond(kernel.Errorf(kernel.KindInvalid, "totp_not_enrolled", "TOTP is not enrolled"))
		return
	}
	if err := t.locked(); err != nil {
		c.Respond(err)
		return
	}
	if strings.TrimSpace(m.Code) == "" {
		c.Respond(kernel.Errorf(kernel.KindInvalid, "totp_required", "send {\"code\"} with a current TOTP code or a recovery code"))
		return
	}
	// The confirmed secret proves the right to revoke; with none, the
	// pending one does (so an abandoned setup can be cleared).
	name := vaultActive
	if !t.active {
		name = vaultPending
	}
	e, err := t.open(name)
	if err != nil {
		c.Respond(err)
		return
	}
	factor, cerr := check(&e, m.Code, true, t.env.now())
	wipeEnrolment(&e)
	if cerr != nil {
		t.failed(c, "revoke", m.Who, cerr)
		return
	}
	for _, n := range []string{vaultActive, vaultPending} {
		if err := t.sec.Delete(n); err != nil {
			c.Respond(err)
			return
		}
	}
	t.active, t.pending, t.remaining = false, false, 0
	if err := t.succeeded(); err != nil {
		c.Respond(err)
		return
	}
	t.env.auditThenRespond(c, audit.Event{EventType: "totp_revoked", Outcome: "ok", Actor: m.Who.Identity, SourceIP: m.Who.SourceIP,
		Details: "verified_with=" + factor}, &TOTPResult{Status: "revoked", Message: "TOTP enrolment removed; approvals no longer ask for a code"})
}

func (t *totpActor) cancel(c actor.Context, m *TOTPCancel) {
	if !t.pending {
		c.Respond(kernel.Errorf(kernel.KindInvalid, "totp_not_pending", "no TOTP enrolment awaits confirmation"))
		return
	}
	if err := t.sec.Delete(vaultPending); err != nil {
		c.Respond(err)
		return
	}
	t.pending = false
	details := "pending enrolment dropped; TOTP stays not enrolled"
	if t.active {
		details = "pending re-enrolment dropped; the confirmed secret stays active"
	}
	t.env.auditThenRespond(c, audit.Event{EventType: "totp_setup_cancelled", Outcome: "ok", Actor: m.Who.Identity, SourceIP: m.Who.SourceIP, Details: details},
		&TOTPResult{Status: "cancelled", Message: "the TOTP enrolment awaiting confirmation was removed; start a new one with POST /api/approvals/totp/setup"})
}

// verify checks an approval's code. In cluster mode the new last step is
// a compare-and-swap: when another node used the enrolment between the
// read and the write, it checks again against what that node wrote (so
// the same code is then a replay), up to maxTOTPRetries times.
func (t *totpActor) verify(c actor.Context, m *verify, tries int) {
	if !t.active {
		// Not enrolled or not confirmed: nothing to demand (the status
		// endpoint says enforced: false).
		c.Respond(&verified{factor: FactorNone})
		return
	}
	if err := t.locked(); err != nil {
		c.Respond(err)
		return
	}
	if strings.TrimSpace(m.Code) == "" {
		c.Respond(errTOTPRequired)
		return
	}
	e, err := t.open(vaultActive)
	if err != nil {
		c.Respond(err)
		return
	}
	defer wipeEnrolment(&e)
	factor, cerr := check(&e, m.Code, true, t.env.now())
	if cerr != nil {
		t.failed(c, "approve "+m.ApprovalID, m.Who, cerr)
		return
	}
	if err := t.seal(vaultActive, &e); err != nil {
		if errors.Is(err, errTOTPChanged) && tries < maxTOTPRetries {
			if err = t.refresh(); err == nil {
				t.verify(c, m, tries+1)
				return
			}
		}
		c.Respond(err)
		return
	}
	t.remaining = len(e.Recovery)
	if err := t.succeeded(); err != nil {
		c.Respond(err)
		return
	}
	if factor == FactorRecovery {
		t.env.auditThenRespond(c, audit.Event{EventType: "totp_recovery_code_used", Outcome: "ok", Actor: m.Who.Identity, SourceIP: m.Who.SourceIP,
			Details: fmt.Sprintf("approval=%s remaining=%d", m.ApprovalID, t.remaining)}, &verified{factor: factor})
		return
	}
	c.Respond(&verified{factor: factor})
}

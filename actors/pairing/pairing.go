package pairing

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// Config is [pairing], validated. Names after LibreFang's where it has
// them (enabled, max_devices, token_expiry_secs, public_base_url).
type Config struct {
	Enabled       bool
	MaxDevices    int           // max_devices (10)
	CodeTTL       time.Duration // token_expiry_secs (300)
	MaxPending    int           // max_pending (5)
	PublicBaseURL string        // public_base_url
	// LockoutAfter wrong codes from one address lock that address out of
	// complete for LockoutFor (lockout_after 5, lockout_secs 900).
	LockoutAfter int
	LockoutFor   time.Duration
	// BurnAfter wrong codes from all addresses together within LockoutFor
	// void every pending code (burn_after 20): a distributed guess gets
	// nowhere, and the owner just asks for a new code.
	BurnAfter int
	// ActionTTL bounds an approval action token's life (action_ttl_secs
	// 900); it never outlives the approval's own timeout.
	ActionTTL time.Duration
}

// DefaultConfig is LibreFang's defaults plus fangd's.
func DefaultConfig() Config {
	return Config{MaxDevices: 10, CodeTTL: 5 * time.Minute, MaxPending: 5, LockoutAfter: 5,
		LockoutFor: 15 * time.Minute, BurnAfter: 20, ActionTTL: 15 * time.Minute}
}

// Pusher is the webhook engine's push-endpoint API (*webhook.Engine).
type Pusher interface {
	CreatePush(ctx context.Context, name, url, secret string, headers map[string]string) (string, error)
	Push(ctx context.Context, id, msgID, typ string, body []byte) error
	PushRaw(ctx context.Context, id, msgID, typ string, body []byte, headers map[string]string) error
	DeletePush(ctx context.Context, id string) error
}

// Options wire the pairing actor.
type Options struct {
	Config Config
	Push   Pusher
	Vault  *store.Vault
	// Bus, when set, is watched for approval.requested: each pending
	// approval notifies every device with approve/reject actions.
	Bus *comms.Bus
	// BaseURL is where devices reach fangd (public_base_url, else the
	// listen address); action buttons point there.
	BaseURL string
	// Broadcast is LibreFang's push_provider: one ntfy topic or gotify
	// application that every notification also goes to. Approval
	// notifications reach it without action buttons: whoever reads a
	// shared topic must not be able to decide.
	Broadcast *Target
	// VAPIDSubject is the sub claim of Web Push's VAPID tokens
	// ("mailto:..." or an https URL; vapid_subject).
	VAPIDSubject string
	Now          func() time.Time
}

// Pairing is the handle the HTTP layer uses.
type Pairing struct {
	k    *kernel.Kernel
	pid  *actor.PID
	opts Options
	// auth maps token hash -> device id; swapped whole by the actor, read
	// by every request without asking it.
	auth     atomic.Pointer[map[string]string]
	lastSeen sync.Map // device id -> time.Time, since start
	key      []byte   // action token HMAC key
	vapid    *ecdsa.PrivateKey
	log      zerolog.Logger
	// broadcast is the Broadcast target's push endpoint, as a pseudo
	// device "broadcast"; nil without one.
	broadcast *Device
}

const vaultActionKey = "pairing/action-key"

// Start spawns the root actor "pairing" (only when enabled: a disabled
// [pairing] answers every route 404, as LibreFang does).
func Start(k *kernel.Kernel, db *store.DB, opts Options) (*Pairing, error) {
	if opts.Push == nil || opts.Vault == nil {
		return nil, errors.New("pairing needs the webhook engine and the vault")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &Pairing{k: k, opts: opts, log: k.Log.With().Str("component", "pairing").Logger()}
	empty := map[string]string{}
	p.auth.Store(&empty)
	key, err := actionKey(opts.Vault)
	if err != nil {
		return nil, err
	}
	p.key = key
	if p.vapid, err = vapidKey(opts.Vault); err != nil {
		return nil, err
	}
	pid, err := k.SpawnRoot("pairing", func() actor.Actor {
		return &pairingActor{p: p, db: db,
			devices: store.NewCollection[Device](db, "pairing/devices"),
			codes:   store.NewCollection[pending](db, "pairing/codes"),
			actions: store.NewCollection[int64](db, "pairing/actions"),
			locks:   store.NewCollection[lockState](db, "pairing/lockouts")}
	})
	if err != nil {
		return nil, err
	}
	p.pid = pid
	if opts.Broadcast != nil {
		if p.broadcast, err = startBroadcast(db, opts.Push, opts.Broadcast); err != nil {
			return nil, err
		}
	}
	// Wait for the load: a device token must authenticate from the first
	// request on.
	loadCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kernel.Ask[[]Device](loadCtx, k, pid, &ListDevices{}); err != nil {
		return nil, err
	}
	return p, nil
}

// actionKey reads the HMAC key for action tokens, creating it once.
func actionKey(v *store.Vault) ([]byte, error) {
	var key []byte
	err := v.With(vaultActionKey, func(secret []byte) error {
		key = append([]byte(nil), secret...)
		return nil
	})
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	// Put wipes what it is given.
	return key, v.Put(vaultActionKey, append([]byte(nil), key...))
}

// Config is the configuration in force.
func (p *Pairing) Config() Config { return p.opts.Config }

// BaseURL is where devices reach fangd.
func (p *Pairing) BaseURL() string { return p.opts.BaseURL }

// Request makes a pairing code.
func (p *Pairing) Request(ctx context.Context) (*Code, error) {
	return kernel.Ask[*Code](ctx, p.k, p.pid, &RequestCode{})
}

// CompleteRequest is POST /api/pairing/complete, decoded.
type CompleteRequest struct {
	Code      string
	Name      string
	Platform  string
	Push      *Target
	PushToken string
	SourceIP  string
}

// Paired answers a completed pairing: the only time the token is shown.
type Paired struct {
	DeviceID    string    `json:"device_id"`
	DeviceToken string    `json:"device_token"`
	APIKey      string    `json:"api_key"` // LibreFang's name for the same token
	Name        string    `json:"display_name"`
	Platform    string    `json:"platform"`
	PairedAt    time.Time `json:"paired_at"`
}

// Complete exchanges a code for a device and its token. The code is
// checked (and a wrong one counted) before anything else is done.
func (p *Pairing) Complete(ctx context.Context, r CompleteRequest) (*Paired, error) {
	if r.Push != nil {
		if err := r.Push.Validate(); err != nil {
			return nil, err
		}
	}
	cl, err := kernel.Ask[*claimed](ctx, p.k, p.pid, &claim{code: r.Code, sourceIP: r.SourceIP})
	if err != nil {
		return nil, err
	}
	dev := Device{ID: cl.deviceID, Name: r.Name, Platform: r.Platform, PairedAt: p.opts.Now().UTC().Truncate(time.Second),
		PushToken: r.PushToken}
	// After the claim, a failure that is not the device's gives the code
	// back so that a corrected target can use it.
	giveBack := func() {
		if r.Push != nil && r.Push.Type == TargetWebPush {
			_ = p.opts.Vault.Delete(subscriptionName(dev.ID))
		}
		if _, uerr := kernel.Ask[bool](context.WithoutCancel(ctx), p.k, p.pid, &unclaim{deviceID: dev.ID, hash: cl.hash, expires: cl.expires}); uerr != nil {
			p.log.Warn().Err(uerr).Msg("could not return a pairing code")
		}
	}
	if r.Push != nil && r.Push.Type == TargetWebPush {
		sub, _ := json.Marshal(subscription{P256DH: r.Push.P256DH, Auth: r.Push.AuthSecret})
		if err := p.opts.Vault.Put(subscriptionName(dev.ID), sub); err != nil {
			giveBack()
			return nil, err
		}
	}
	if r.Push != nil {
		u, secret, headers := r.Push.endpoint()
		id, err := p.opts.Push.CreatePush(ctx, "device:"+dev.ID, u, secret, headers)
		if err != nil {
			giveBack()
			return nil, err
		}
		t := *r.Push
		t.Token, t.Secret, t.P256DH, t.AuthSecret = "", "", "", ""
		dev.Push, dev.Endpoint = &t, id
	}
	token, hash := newDeviceToken()
	dev.TokenHash = hash
	if _, err := kernel.Ask[bool](ctx, p.k, p.pid, &register{dev: dev}); err != nil {
		if dev.Endpoint != "" {
			_ = p.opts.Push.DeletePush(context.WithoutCancel(ctx), dev.Endpoint)
		}
		return nil, err
	}
	return &Paired{DeviceID: dev.ID, DeviceToken: token, APIKey: token, Name: dev.Name, Platform: dev.Platform, PairedAt: dev.PairedAt}, nil
}

// Authenticate says which device a bearer token belongs to. It asks no
// actor: the token map is swapped whole on every change.
func (p *Pairing) Authenticate(token []byte) (string, bool) {
	if p == nil || len(token) < 8 || string(token[:4]) != "fdv_" {
		return "", false
	}
	id, ok := (*p.auth.Load())[TokenHash(token)]
	if ok {
		p.lastSeen.Store(id, p.opts.Now().UTC().Truncate(time.Second))
	}
	return id, ok
}

// Devices lists the paired devices, oldest first.
func (p *Pairing) Devices(ctx context.Context) ([]View, error) {
	devs, err := kernel.Ask[[]Device](ctx, p.k, p.pid, &ListDevices{})
	if err != nil {
		return nil, err
	}
	out := make([]View, 0, len(devs))
	for _, d := range devs {
		out = append(out, p.view(d))
	}
	return out, nil
}

// Device returns one device's view; 404 unknown.
func (p *Pairing) Device(ctx context.Context, id string) (*View, error) {
	devs, err := kernel.Ask[[]Device](ctx, p.k, p.pid, &ListDevices{})
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if d.ID == id {
			v := p.view(d)
			return &v, nil
		}
	}
	return nil, kernel.NotFound("no paired device %q", id)
}

// PushEndpoint is the webhook engine's push endpoint of device id, whose
// delivery records are the device's delivery history ("" when the
// device has no push target); 404 unknown device.
func (p *Pairing) PushEndpoint(ctx context.Context, id string) (string, error) {
	devs, err := kernel.Ask[[]Device](ctx, p.k, p.pid, &ListDevices{})
	if err != nil {
		return "", err
	}
	for _, d := range devs {
		if d.ID == id {
			return d.Endpoint, nil
		}
	}
	return "", kernel.NotFound("no paired device %q", id)
}

func (p *Pairing) view(d Device) View {
	v := View{ID: d.ID, Name: d.Name, Platform: d.Platform, PairedAt: d.PairedAt, Push: d.Push}
	if t, ok := p.lastSeen.Load(d.ID); ok {
		ts := t.(time.Time)
		v.LastSeen = &ts
	}
	return v
}

// Revoke unpairs a device: its token fails from the next request on, and
// its push endpoint (with its queued notifications) is deleted.
func (p *Pairing) Revoke(ctx context.Context, id string) (*View, error) {
	d, err := kernel.Ask[*Device](ctx, p.k, p.pid, &Revoke{ID: id})
	if err != nil {
		return nil, err
	}
	if d.Endpoint != "" {
		if err := p.opts.Push.DeletePush(ctx, d.Endpoint); err != nil {
			p.log.Warn().Err(err).Str("device_id", id).Msg("could not delete a revoked device's push endpoint")
		}
	}
	if d.Push != nil && d.Push.Type == TargetWebPush {
		if err := p.opts.Vault.Delete(subscriptionName(id)); err != nil {
			p.log.Warn().Err(err).Str("device_id", id).Msg("could not delete a revoked device's push subscription")
		}
	}
	p.lastSeen.Delete(id)
	v := p.view(*d)
	return &v, nil
}

// Delivery is one device's outcome of a notification.
type Delivery struct {
	DeviceID  string `json:"device_id"`
	Target    string `json:"target"`
	Status    string `json:"status"` // queued (durably, the engine retries), failed, no_target
	MessageID string `json:"message_id,omitempty"`
	Error     string `json:"error,omitempty"`
}

// NotifyResult answers POST /api/pairing/notify.
type NotifyResult struct {
	OK         bool       `json:"ok"`
	Notified   int        `json:"notified"`
	Failed     int        `json:"failed"`
	Deliveries []Delivery `json:"deliveries"`
}

// Notify queues n for every paired device with a push target; each is
// durable in the device's outbox when this returns.
func (p *Pairing) Notify(ctx context.Context, n *Notification) (*NotifyResult, error) {
	devs, err := kernel.Ask[[]Device](ctx, p.k, p.pid, &ListDevices{})
	if err != nil {
		return nil, err
	}
	if p.broadcast != nil {
		devs = append(devs, *p.broadcast)
	}
	return p.notify(ctx, devs, func(Device) *Notification { return n }), nil
}

func (p *Pairing) notify(ctx context.Context, devs []Device, build func(Device) *Notification) *NotifyResult {
	res := &NotifyResult{OK: true, Deliveries: []Delivery{}}
	for _, d := range devs {
		del := Delivery{DeviceID: d.ID}
		if d.Push == nil || d.Endpoint == "" {
			del.Status = "no_target"
			res.Deliveries = append(res.Deliveries, del)
			continue
		}
		del.Target = d.Push.Type
		del.MessageID = "msg_" + uuid.NewString()
		var err error
		if d.Push.Type == TargetWebPush {
			var body []byte
			var headers map[string]string
			if body, headers, err = p.webPushMessage(d, build(d)); err == nil {
				err = p.opts.Push.PushRaw(ctx, d.Endpoint, del.MessageID, "pairing.notification", body, headers)
			}
		} else {
			err = p.opts.Push.Push(ctx, d.Endpoint, del.MessageID, "pairing.notification", d.Push.body(build(d)))
		}
		if err != nil {
			del.Status, del.Error, del.MessageID = "failed", kernel.PublicMessage(err), ""
			res.Failed++
		} else {
			del.Status = "queued"
			res.Notified++
		}
		res.Deliveries = append(res.Deliveries, del)
	}
	return res
}

// Action verifies an action token and uses it up: it works once, before
// it expires, for a device that is still paired. The caller then decides
// the approval as that device.
func (p *Pairing) Action(ctx context.Context, token string) (*ActionClaims, error) {
	c, err := verifyAction(p.key, token, p.opts.Now())
	if err != nil {
		return nil, err
	}
	if _, err := kernel.Ask[bool](ctx, p.k, p.pid, &claimAction{jti: c.JTI, exp: c.Expires, device: c.DeviceID}); err != nil {
		return nil, err
	}
	return c, nil
}

// approvalRequested notifies every device of a pending approval, with
// approve and reject buttons carrying action tokens.
func (p *Pairing) approvalRequested(devs []Device, ev approvalEvent) {
	exp := p.opts.Now().Add(p.opts.Config.ActionTTL)
	if !ev.ExpiresAt.IsZero() && ev.ExpiresAt.Before(exp) {
		exp = ev.ExpiresAt
	}
	url := strings.TrimRight(p.opts.BaseURL, "/") + "/api/pairing/action"
	build := func(d Device) *Notification {
		n := &Notification{Title: "Approval needed: " + ev.Action, Priority: 4, ApprovalID: ev.ID,
			Message: fmt.Sprintf("Agent %s asks to run %s (risk %s).", ev.AgentName, ev.Action, ev.RiskLevel)}
		if d.ID == broadcastID {
			return n
		}
		act := func(label, decision string) Action {
			tok := signAction(p.key, actionClaims{Approval: ev.ID, Decision: decision, Device: d.ID, Exp: exp.Unix(), JTI: uuid.NewString()})
			body, _ := json.Marshal(map[string]string{"token": tok})
			return Action{Label: label, URL: url, Method: "POST", Body: string(body)}
		}
		n.Actions = []Action{act("Approve", "approve"), act("Reject", "reject")}
		return n
	}
	if p.broadcast != nil {
		devs = append(devs, *p.broadcast)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := p.notify(ctx, devs, build)
	if res.Failed > 0 {
		p.log.Warn().Str("approval_id", ev.ID).Int("failed", res.Failed).Msg("some devices could not be notified of an approval")
	}
}

// approvalEvent is the part of an approval.requested detail used here.
type approvalEvent struct {
	ID        string    `json:"id"`
	AgentName string    `json:"agent_name"`
	Action    string    `json:"action"`
	RiskLevel string    `json:"risk_level"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ---- the actor ----

type pairingActor struct {
	p       *Pairing
	db      *store.DB
	devices *store.Collection[Device]
	codes   *store.Collection[pending]
	actions *store.Collection[int64]
	// locks keeps the wrong-code state, so a restart does not lift a
	// lockout: one entry per address, and allFailures for the burn window.
	locks *store.Collection[lockState]

	devs     map[string]*Device
	pending  map[string]time.Time // code hash -> expiry
	reserved int                  // slots claimed, not yet registered
	used     map[string]time.Time // action jti -> expiry
	// Wrong codes: per address, and all together within LockoutFor.
	fails  map[string]*failures
	recent []time.Time
}

type failures struct {
	n           int
	lockedUntil time.Time
}

// lockState is failures (or, under allFailures, the burn window) as
// stored in pairing/lockouts.
type lockState struct {
	N           int         `json:"n,omitempty"`
	LockedUntil time.Time   `json:"locked_until,omitzero"`
	Recent      []time.Time `json:"recent,omitempty"`
}

// allFailures is the lockouts key of the burn window (no address
// starts with "_").
const allFailures = "_all"

// registered and revoked come back from the write queue once durable.
type registered struct {
	dev    Device
	err    error
	sender *actor.PID
}

func (a *pairingActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if err := a.load(); err != nil {
			panic(fmt.Errorf("pairing: load: %w", err))
		}
		if a.p.opts.Bus != nil {
			a.p.opts.Bus.Watch(c.Self())
		}
	case *RequestCode:
		a.request(c)
	case *claim:
		a.claim(c, m)
	case *unclaim:
		a.reserved--
		if m.expires.After(a.p.opts.Now()) {
			a.pending[m.hash] = m.expires
			a.codes.PutAsync(m.hash, pending{Expires: m.expires}, a.answer(c, true))
			return
		}
		c.Respond(true)
	case *register:
		a.register(c, m)
	case *registered:
		a.reserved--
		if m.err != nil {
			c.Send(m.sender, m.err)
			return
		}
		d := m.dev
		a.devs[d.ID] = &d
		a.publishAuth()
		c.Send(m.sender, true)
	case *ListDevices:
		c.Respond(a.list())
	case *Revoke:
		a.revoke(c, m)
	case *claimAction:
		a.claimAction(c, m)
	case *comms.Batch:
		a.onBatch(m)
	}
}

func (a *pairingActor) load() error {
	a.devs, a.pending, a.used, a.fails = map[string]*Device{}, map[string]time.Time{}, map[string]time.Time{}, map[string]*failures{}
	if err := a.devices.Each(func(id string, d Device) bool {
		a.devs[id] = &d
		return true
	}); err != nil {
		return err
	}
	now := a.p.opts.Now()
	// Expired leftovers go with async deletes: no synced write in Receive.
	if err := store.LoadLive(a.codes, a.pending, func(c pending) (time.Time, bool) { return c.Expires, c.Expires.After(now) }); err != nil {
		return err
	}
	if err := store.LoadLive(a.actions, a.used, func(exp int64) (time.Time, bool) { t := time.Unix(exp, 0); return t, t.After(now) }); err != nil {
		return err
	}
	// Wrong-code counts: a lockout that has run out, like the window's
	// old failures, is dropped (and deleted) as wrongCode would.
	var stale []string
	cfg := a.p.opts.Config
	if err := a.locks.Each(func(id string, st lockState) bool {
		if id == allFailures {
			for _, t := range st.Recent {
				if t.After(now.Add(-cfg.LockoutFor)) {
					a.recent = append(a.recent, t)
				}
			}
			return true
		}
		if st.N >= cfg.LockoutAfter && !now.Before(st.LockedUntil) {
			stale = append(stale, id)
			return true
		}
		a.fails[id] = &failures{n: st.N, lockedUntil: st.LockedUntil}
		return true
	}); err != nil {
		return err
	}
	for _, id := range stale {
		a.locks.DeleteAsync(id, func(error) {})
	}
	a.publishAuth()
	return nil
}

// answer returns a write-queue callback that answers the current sender
// with v once the write is durable (or with the error).
func (a *pairingActor) answer(c actor.Context, v any) func(error) {
	sender, root := c.Sender(), c.ActorSystem().Root
	return func(err error) {
		if sender == nil {
			return
		}
		if err != nil {
			root.Send(sender, fmt.Errorf("pairing: store: %w", err))
			return
		}
		root.Send(sender, v)
	}
}

func (a *pairingActor) publishAuth() {
	m := make(map[string]string, len(a.devs))
	for id, d := range a.devs {
		m[d.TokenHash] = id
	}
	a.p.auth.Store(&m)
}

// prune drops expired codes from memory (their keys go at the next load
// or when a code is claimed).
func (a *pairingActor) prune(now time.Time) {
	for h, exp := range a.pending {
		if !exp.After(now) {
			delete(a.pending, h)
			a.codes.DeleteAsync(h, func(error) {})
		}
	}
	for j, exp := range a.used {
		if !exp.After(now) {
			delete(a.used, j)
			a.actions.DeleteAsync(j, func(error) {})
		}
	}
}

func (a *pairingActor) request(c actor.Context) {
	now := a.p.opts.Now()
	a.prune(now)
	cfg := a.p.opts.Config
	if len(a.pending) >= cfg.MaxPending {
		c.Respond(kernel.Errorf(kernel.KindConflict, "too_many_pending", "too many pending pairing requests (%d); let one expire or complete it", cfg.MaxPending))
		return
	}
	if len(a.devs)+a.reserved >= cfg.MaxDevices {
		c.Respond(kernel.Errorf(kernel.KindConflict, "max_devices", "the maximum of %d paired devices is reached; revoke one first", cfg.MaxDevices))
		return
	}
	code := newCode()
	h := codeHash(code)
	for a.pending[h] != (time.Time{}) {
		code = newCode()
		h = codeHash(code)
	}
	exp := now.Add(cfg.CodeTTL).UTC().Truncate(time.Second)
	a.pending[h] = exp
	a.codes.PutAsync(h, pending{Expires: exp}, a.answer(c, &Code{Code: code, ExpiresAt: exp}))
}

var errBadCode = kernel.Errorf(kernel.KindNotFound, "invalid_pairing_code", "the pairing code is wrong, expired or already used")

func (a *pairingActor) claim(c actor.Context, m *claim) {
	now := a.p.opts.Now()
	cfg := a.p.opts.Config
	f := a.fails[m.sourceIP]
	if f != nil && now.Before(f.lockedUntil) {
		c.Respond(kernel.Errorf(kernel.KindRateLimited, "pairing_locked",
			"too many wrong pairing codes from this address; try again after %s", f.lockedUntil.UTC().Format(time.RFC3339)))
		return
	}
	h := codeHash(m.code)
	exp, ok := a.pending[h]
	if !ok || !exp.After(now) || m.code == "" {
		if ok {
			delete(a.pending, h)
			a.codes.DeleteAsync(h, func(error) {})
		}
		werr := a.wrongCode(m.sourceIP, now)
		// Answered once the count is durable: a restart (or a crash)
		// right after cannot forget a failure the caller saw.
		a.saveFailures(m.sourceIP, a.answer(c, werr))
		return
	}
	if len(a.devs)+a.reserved >= cfg.MaxDevices {
		c.Respond(kernel.Errorf(kernel.KindConflict, "max_devices", "the maximum of %d paired devices is reached", cfg.MaxDevices))
		return
	}
	delete(a.pending, h)
	if _, had := a.fails[m.sourceIP]; had {
		delete(a.fails, m.sourceIP)
		a.locks.DeleteAsync(m.sourceIP, func(error) {})
	}
	a.reserved++
	a.codes.DeleteAsync(h, a.answer(c, &claimed{deviceID: uuid.NewString(), hash: h, expires: exp}))
}

// wrongCode counts a failure and says what to answer: the code error, or
// the lockout that this failure starts.
func (a *pairingActor) wrongCode(ip string, now time.Time) error {
	cfg := a.p.opts.Config
	f := a.fails[ip]
	if f == nil || (f.n >= cfg.LockoutAfter && !now.Before(f.lockedUntil)) {
		f = &failures{}
		a.fails[ip] = f
	}
	f.n++
	cut := now.Add(-cfg.LockoutFor)
	keep := a.recent[:0]
	for _, t := range a.recent {
		if t.After(cut) {
			keep = append(keep, t)
		}
	}
	a.recent = append(keep, now)
	// Only whether BurnAfter are in the window matters: keep no more
	// (the list is stored on every failure).
	if n := len(a.recent) - max(cfg.BurnAfter, 1); n > 0 {
		a.recent = slices.Delete(a.recent, 0, n)
	}
	if len(a.recent) >= cfg.BurnAfter && len(a.pending) > 0 {
		a.p.log.Warn().Int("failures", len(a.recent)).Msg("pairing: too many wrong codes from all addresses; every pending code is void")
		for h := range a.pending {
			delete(a.pending, h)
			a.codes.DeleteAsync(h, func(error) {})
		}
	}
	if f.n >= cfg.LockoutAfter {
		f.lockedUntil = now.Add(cfg.LockoutFor)
		return kernel.Errorf(kernel.KindRateLimited, "pairing_locked",
			"too many wrong pairing codes from this address; locked until %s", f.lockedUntil.UTC().Format(time.RFC3339))
	}
	return errBadCode
}

// saveFailures writes ip's count and the burn window in one async write.
func (a *pairingActor) saveFailures(ip string, done func(error)) {
	st := lockState{}
	if f := a.fails[ip]; f != nil {
		st = lockState{N: f.n, LockedUntil: f.lockedUntil}
	}
	all := lockState{Recent: slices.Clone(a.recent)}
	a.db.UpdateAsync(func(tx *store.Txn) error {
		if err := a.locks.PutTx(tx, ip, st); err != nil {
			return err
		}
		return a.locks.PutTx(tx, allFailures, all)
	}, done)
}

func (a *pairingActor) register(c actor.Context, m *register) {
	self, sender, root := c.Self(), c.Sender(), c.ActorSystem().Root
	dev := m.dev
	a.devices.PutAsync(dev.ID, dev, func(err error) {
		root.Send(self, &registered{dev: dev, err: err, sender: sender})
	})
}

func (a *pairingActor) list() []Device {
	out := make([]Device, 0, len(a.devs))
	for _, d := range a.devs {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b Device) int { return cmp.Or(a.PairedAt.Compare(b.PairedAt), cmp.Compare(a.ID, b.ID)) })
	return out
}

func (a *pairingActor) revoke(c actor.Context, m *Revoke) {
	d, ok := a.devs[m.ID]
	if !ok {
		c.Respond(kernel.NotFound("no paired device %q", m.ID))
		return
	}
	// Out of the token map first: the token stops working now, before
	// the delete is even durable.
	delete(a.devs, m.ID)
	a.publishAuth()
	a.devices.DeleteAsync(m.ID, a.answer(c, d))
}

func (a *pairingActor) claimAction(c actor.Context, m *claimAction) {
	if _, ok := a.devs[m.device]; !ok {
		c.Respond(errBadAction) // the device was revoked: its buttons die with it
		return
	}
	if _, used := a.used[m.jti]; used {
		c.Respond(kernel.Errorf(kernel.KindConflict, "action_used", "this action was already used"))
		return
	}
	a.used[m.jti] = m.exp
	a.actions.PutAsync(m.jti, m.exp.Unix(), a.answer(c, true))
}

func (a *pairingActor) onBatch(b *comms.Batch) {
	var reqs []approvalEvent
	for _, r := range b.Records {
		if r.Type != "approval.requested" {
			continue
		}
		var ev struct {
			Detail approvalEvent `json:"detail"`
		}
		if json.Unmarshal(r.JSON, &ev) == nil && ev.Detail.ID != "" {
			reqs = append(reqs, ev.Detail)
		}
	}
	if len(reqs) == 0 || (len(a.devs) == 0 && a.p.broadcast == nil) {
		return
	}
	devs := a.list()
	// The engine's asks must not run in Receive.
	go func() {
		for _, ev := range reqs {
			a.p.approvalRequested(devs, ev)
		}
	}()
}

const broadcastID = "broadcast"

// broadcastRecord remembers the broadcast endpoint across restarts, with
// the target it was made for (a changed target gets a new endpoint).
type broadcastRecord struct {
	Endpoint string `json:"endpoint"`
	Target   string `json:"target"`
}

func startBroadcast(db *store.DB, push Pusher, t *Target) (*Device, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("pairing.push_provider: %w", err)
	}
	u, secret, headers := t.endpoint()
	key := t.Type + " " + u + " " + t.Topic + " " + TokenHash([]byte(t.Token))
	meta := store.NewCollection[broadcastRecord](db, "pairing/meta")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, err := meta.Get(broadcastID)
	switch {
	case err == nil && rec.Target == key:
	case err == nil || errors.Is(err, store.ErrNotFound):
		if rec.Endpoint != "" {
			_ = push.DeletePush(ctx, rec.Endpoint)
		}
		id, err := push.CreatePush(ctx, "pairing:broadcast", u, secret, headers)
		if err != nil {
			return nil, fmt.Errorf("pairing broadcast endpoint: %w", err)
		}
		rec = broadcastRecord{Endpoint: id, Target: key}
		if err := meta.Put(broadcastID, rec); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	shown := *t
	shown.Token, shown.Secret = "", ""
	return &Device{ID: broadcastID, Name: "push_provider", Push: &shown, Endpoint: rec.Endpoint}, nil
}

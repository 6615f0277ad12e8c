// Package pairing pairs phones and other devices with fangd: a short
// typable code (POST /api/pairing/request) is exchanged by the device for
// its own bearer token (POST /api/pairing/complete), which authenticates
// it with the `device` role. Paired devices get notifications — through
// the durable webhook delivery engine, one push endpoint per device — and
// can answer approvals from a notification's action with a signed,
// single-use, expiring action token. The root actor "pairing" owns the
// pending codes, the devices and the used action tokens; everything is in
// Badger, written asynchronously and answered once durable.
// docs/pairing.md has the recipe.
package pairing

import "time"

// ---- what the "pairing" actor accepts ----

// RequestCode makes a new pairing code. Answered with *Code once it is
// durable; 409 too_many_pending when MaxPending codes wait.
type RequestCode struct{}

// Code is a pending pairing code, shown once to whoever asked for it.
type Code struct {
	Code      string    `json:"pairing_code"`
	ExpiresAt time.Time `json:"expires_at"`
}

// claim checks a code from SourceIP and, when it is right, consumes it
// and reserves a device slot. Answered with *claimed, or 404
// invalid_pairing_code (wrong, expired or used), 409 max_devices, 429
// pairing_locked.
type claim struct {
	code     string
	sourceIP string
}

type claimed struct {
	deviceID string
	// hash and expires put the code back (unclaim) if the pairing fails
	// after the claim for a reason that is not the device's.
	hash    string
	expires time.Time
}

// unclaim returns a claimed code and its slot. Answered with true.
type unclaim struct {
	deviceID string
	hash     string
	expires  time.Time
}

// register stores a paired device. Answered with true once it is durable
// and its token authenticates.
type register struct{ dev Device }

// ListDevices answers []Device.
type ListDevices struct{}

// Revoke removes a device: its token stops authenticating before the
// answer (*Device, the removed record); 404 unknown.
type Revoke struct{ ID string }

// claimAction records an action token's id as used. Answered true once
// durable; 409 action_used when it was used before.
type claimAction struct {
	jti, device string
	exp         time.Time
}

// ---- records ----

// Device is one paired device, as stored. Its token is kept only as a
// SHA-256 hash; push secrets live in the webhook engine's vault.
type Device struct {
	ID        string    `json:"device_id"`
	Name      string    `json:"display_name"`
	Platform  string    `json:"platform"`
	PairedAt  time.Time `json:"paired_at"`
	Push      *Target   `json:"push,omitempty"`
	PushToken string    `json:"push_token,omitempty"` // LibreFang's push_token: kept, unused
	TokenHash string    `json:"token_hash"`
	// Endpoint is the webhook engine's push endpoint for this device.
	Endpoint string `json:"endpoint,omitempty"`
}

// View is a device as GET /api/pairing/devices lists it.
type View struct {
	ID       string     `json:"device_id"`
	Name     string     `json:"display_name"`
	Platform string     `json:"platform"`
	PairedAt time.Time  `json:"paired_at"`
	LastSeen *time.Time `json:"last_seen"`
	Push     *Target    `json:"push"`
}

// pending is a stored pairing code, keyed by the hash of its normalised
// form (the code itself is never stored).
type pending struct {
	Expires time.Time `json:"expires"`
}

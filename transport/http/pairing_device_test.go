package http

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/approval/approvaltest"
	"github.com/fangd/fangd/actors/channel/ntfy/ntfytest"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/actors/webhook"
)

// A notification's approve button cannot stand in for the second factor:
// where the policy asks for TOTP the press is refused with totp_required,
// the approval stays pending, and the device answers with its own token
// and the code (docs/pairing.md, "Approval buttons").
func TestPairingActionPressDoesNotBypassTOTP(t *testing.T) {
	t.Parallel()
	ntfy := ntfytest.New()
	defer ntfy.Close()
	ps := newPairingServer(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pol := *ps.apps.Policy()
	pol.SecondFactor = approval.SecondFactorTOTP
	if err := ps.apps.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	admin := approval.Decider{Identity: "api_key", Via: approval.ViaAPI}
	enr, err := ps.apps.TOTPSetup(ctx, "", admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.apps.TOTPConfirm(ctx, approvaltest.TOTP(t, enr.Secret, time.Now()), admin); err != nil {
		t.Fatal(err)
	}

	st, out := ps.complete(t, fmt.Sprintf(`{"pairing_code":%q,"display_name":"pixel","push":{"type":"ntfy","server":%q,"topic":"t","token":%q}}`,
		ps.code(t), ntfy.URL, ntfytest.BotToken))
	if st != 200 {
		t.Fatalf("complete: %d %v", st, out)
	}
	token := out["device_token"].(string)
	ap, err := ps.apps.Create(ctx, approval.Request{AgentID: "a-1", AgentName: "coder", Action: "shell_exec", Description: "rm -rf build"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := ntfy.WaitMessage(ctx, func(m ntfytest.Message) bool { return m.Topic == "t" && len(m.Actions) == 2 })
	if err != nil {
		t.Fatal("no approval notification:", err)
	}
	approve := msg.Actions[0]
	r := ps.do(t, approve.Method, "/api/pairing/action", approve.Body, "Content-Type", approve.Headers["Content-Type"])
	if r.status != 400 || r.envelope(t).Code != "totp_required" {
		t.Fatalf("press without a code: %d %s", r.status, r.body)
	}
	if got, _ := ps.apps.Get(ctx, ap.ID); got.Status != approval.StatusPending {
		t.Fatalf("the press decided the approval without TOTP: %q", got.Status)
	}
	// The token is spent; a press with a made-up code gets nowhere either.
	body := strings.Replace(approve.Body, "}", `,"totp_code":"000000"}`, 1)
	if r := ps.do(t, "POST", "/api/pairing/action", body, "Content-Type", "application/json"); r.status != 409 || r.envelope(t).Code != "action_used" {
		t.Fatalf("second press: %d %s", r.status, r.body)
	}
	// The device answers with its own token and the code.
	code := approvaltest.TOTP(t, enr.Secret, time.Now().Add(30*time.Second))
	r = ps.do(t, "POST", "/api/approvals/"+ap.ID+"/approve", `{"totp_code":"`+code+`"}`, append(asDevice(token), "Content-Type", "application/json")...)
	if r.status != 200 || !strings.Contains(string(r.body), `"status":"approved"`) || !strings.Contains(string(r.body), `"second_factor":"totp"`) {
		t.Fatalf("device approves with the code: %d %s", r.status, r.body)
	}
}

func TestPairingDeviceDeliveryHistory(t *testing.T) {
	t.Parallel()
	ntfy := ntfytest.New()
	defer ntfy.Close()
	ps := newPairingServer(t, nil, nil)
	st, out := ps.complete(t, fmt.Sprintf(`{"pairing_code":%q,"display_name":"pixel","push":{"type":"ntfy","server":%q,"topic":"t","token":%q}}`,
		ps.code(t), ntfy.URL, ntfytest.BotToken))
	if st != 200 {
		t.Fatalf("complete: %d %v", st, out)
	}
	devID, token := out["device_id"].(string), out["device_token"].(string)
	st, out = ps.complete(t, fmt.Sprintf(`{"pairing_code":%q,"display_name":"no push"}`, ps.code(t)))
	if st != 200 {
		t.Fatalf("complete: %d %v", st, out)
	}
	bare := out["device_id"].(string)
	if r := ps.authed(t, "POST", "/api/pairing/notify", `{"title":"hello","message":"build done"}`); r.status != 200 {
		t.Fatalf("notify: %d %s", r.status, r.body)
	}
	type history struct {
		DeviceID   string            `json:"device_id"`
		Deliveries []webhook.Attempt `json:"deliveries"`
		Total      int               `json:"total"`
	}
	var h history
	var r response
	kerneltest.WaitFor(t, "a delivery record", func() bool {
		r = ps.authed(t, "GET", "/api/pairing/devices/"+devID+"/deliveries", "")
		h = decodeTo[history](t, r)
		return len(h.Deliveries) >= 1
	})
	if r.status != 200 || h.DeviceID != devID || h.Total != 1 || h.Deliveries[0].Outcome != "delivered" || h.Deliveries[0].EventType != "pairing.notification" ||
		strings.Contains(string(r.body), ntfytest.BotToken) {
		t.Fatalf("deliveries: %d %s", r.status, r.body)
	}
	if r := ps.authed(t, "GET", "/api/pairing/devices/"+bare+"/deliveries", ""); r.status != 200 || decodeTo[history](t, r).Total != 0 {
		t.Fatalf("device without push: %d %s", r.status, r.body)
	}
	for path, want := range map[string]int{"/api/pairing/devices/nope/deliveries": 404, "/api/pairing/devices/" + devID + "/deliveries?limit=0": 400} {
		if r := ps.authed(t, "GET", path, ""); r.status != want {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}
	if r := ps.do(t, "GET", "/api/pairing/devices/"+devID+"/deliveries", "", asDevice(token)...); r.status != 403 {
		t.Fatalf("a device reads delivery history: %d", r.status)
	}
}

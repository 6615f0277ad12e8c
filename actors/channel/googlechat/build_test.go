package googlechat

import (
	"errors"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/googlechat/googlechattest"
)

func TestBuild(t *testing.T) {
	g := channeltest.Cleanup(t, googlechattest.New())
	spec, _ := channel.Lookup("google_chat")
	sa := g.ServiceAccountJSON()
	build := func(values map[string]string, secret string) error {
		_, err := New(&channel.Config{Spec: spec, Values: values, Secrets: map[string]string{"service_account": secret}})
		return err
	}
	for name, c := range map[string]struct {
		values map[string]string
		secret string
		field  string
	}{
		"not a key file":    {map[string]string{"audience": "1"}, `{"type":"authorized_user"}`, "service_account"},
		"nothing to verify": {nil, sa, "audience"},
		"bad audience":      {map[string]string{"audience": "my app"}, sa, "audience"},
		"bad api url":       {map[string]string{"audience": "1", "api_url": "chat.googleapis.com"}, sa, "api_url"},
	} {
		var fe *channel.FieldError
		if err := build(c.values, c.secret); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: err = %v, want field %s", name, err, c.field)
		}
	}
	var fe *channel.FieldError
	if _, err := New(&channel.Config{Spec: spec, Values: map[string]string{"audience": "1"}, Secrets: map[string]string{"service_account": sa,
		"incoming_webhook_url": "https://chat.googleapis.com/v1/spaces/A/messages"}}); !errors.As(err, &fe) || fe.Field != "incoming_webhook_url" {
		t.Errorf("webhook URL without key: %v", err)
	}
	a, err := New(&channel.Config{Spec: spec, Values: map[string]string{"audience": "https://fangd.example/channels/google_chat/webhook"},
		Secrets: map[string]string{"service_account": sa}})
	if err != nil {
		t.Fatal(err)
	}
	if ad := a.(*Adapter); ad.byNumber || ad.certsURL != idTokenCertsURL || ad.jwt.TokenURL != g.URL+googlechattest.TokenPath {
		t.Fatalf("endpoint-URL audience: %+v", ad)
	}
	a, _ = New(&channel.Config{Spec: spec, Values: map[string]string{"audience": "123"}, Secrets: map[string]string{"service_account": sa}})
	if ad := a.(*Adapter); !ad.byNumber || ad.certsURL != projectCertsURL {
		t.Fatalf("project-number audience: %+v", ad)
	}
}

func TestLegacyVerificationToken(t *testing.T) {
	g := channeltest.Cleanup(t, googlechattest.New())
	spec, _ := channel.Lookup("google_chat")
	a, err := New(&channel.Config{Spec: spec, Secrets: map[string]string{"service_account": g.ServiceAccountJSON(), "verification_token": "legacy-tok"}})
	if err != nil {
		t.Fatal(err)
	}
	wr := a.(channel.WebhookReceiver)
	body := func(tok string) []byte {
		return []byte(`{"type":"MESSAGE","token":"` + tok + `","space":{"name":"spaces/AAAA","type":"DM"},` +
			`"message":{"name":"spaces/AAAA/messages/1","text":"hi","sender":{"name":"users/1","displayName":"A","type":"HUMAN"},"thread":{"name":"spaces/AAAA/threads/t"}}}`)
	}
	_, msgs, err := wr.Webhook(t.Context(), &channel.WebhookRequest{Method: "POST", Body: body("legacy-tok")})
	if err != nil || len(msgs) != 1 || msgs[0].Text != "hi" || !msgs[0].Direct || msgs[0].ThreadID != "spaces/AAAA/threads/t" {
		t.Fatalf("legacy: %v %+v", err, msgs)
	}
	if _, _, err := wr.Webhook(t.Context(), &channel.WebhookRequest{Method: "POST", Body: body("guess")}); !errors.Is(err, channel.ErrBadSignature) {
		t.Fatalf("wrong token: %v", err)
	}
}

package webhook

import "github.com/fangd/fangd/actors/channel"

// The webhook adapter registers its configuration schema and its builder
// with the channel runtime when the package is linked in (see
// actors/channel/adapters). Whether it takes webhooks is not declared:
// it follows from *Adapter implementing channel.WebhookReceiver.
func init() { channel.Register[*Adapter](spec, New) }

// The optional interfaces *Adapter implements, checked at compile time:
// the runtime finds them by type assertion, so a method whose signature
// drifted would otherwise silently switch the behaviour off.
// WebhookReceiver: the runtime routes /channels/<name>/webhook only to
// adapters that implement it, so a misspelt method must not compile.
var (
	_ channel.Adapter         = (*Adapter)(nil)
	_ channel.WebhookReceiver = (*Adapter)(nil)
)

// spec is the webhook channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "webhook", DisplayName: "Webhook", Category: "notifications", Description: "Generic webhook: HMAC-signed inbound, callback URL outbound",
	Filters: channel.Filters{Users: "allowed_senders"},
	Fields: []channel.Field{channel.SecretField("secret", "HMAC secret (signs both directions)", "WEBHOOK_SECRET", true), channel.URLField("callback_url", "Callback URL for replies", "", false),
		channel.ListField("allowed_senders", "Allowed sender ids", false)}}

package whatsapp

import "github.com/fangd/fangd/actors/channel"

// The whatsapp adapter registers its configuration schema and its builder
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

// spec is the whatsapp channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "whatsapp", DisplayName: "WhatsApp", Category: "messaging", SetupType: "qr", Description: "WhatsApp Cloud API (Graph) with webhook verification; QR login through a WhatsApp Web gateway",
	Filters: channel.Filters{Users: "allowed_users"}, Account: []string{"phone_number_id"},
	Fields: []channel.Field{
		channel.SecretField("access_token", "Cloud API access token", "WHATSAPP_ACCESS_TOKEN", false),
		channel.SecretField("verify_token", "Webhook verify token", "WHATSAPP_VERIFY_TOKEN", false),
		channel.SecretField("app_secret", "App secret (X-Hub-Signature-256)", "WHATSAPP_APP_SECRET", false),
		channel.TextField("phone_number_id", "Phone number id", false),
		channel.URLField("api_url", "Graph API base URL", "https://graph.facebook.com/v21.0", false),
		channel.URLField("gateway_url", "WhatsApp Web gateway URL (QR mode)", "", false),
		channel.ListField("allowed_users", "Allowed phone numbers", false),
	}}

package googlechat

import "github.com/fangd/fangd/actors/channel"

// The google_chat adapter registers its configuration schema and its builder
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

// spec is the google_chat channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "google_chat", DisplayName: "Google Chat", Category: "enterprise", Description: "Google Chat app webhook in, REST or incoming webhook out",
	Filters: channel.Filters{Users: "allowed_users", Chats: "space_ids"},
	Fields: []channel.Field{channel.SecretField("service_account", "Service account JSON", "GOOGLE_CHAT_SERVICE_ACCOUNT", true),
		channel.SecretField("verification_token", "Webhook verification token", "GOOGLE_CHAT_VERIFICATION_TOKEN", false),
		channel.ListField("space_ids", "Allowed space ids", false), channel.ListField("allowed_users", "Allowed user ids", false),
		// The URL carries the webhook's key and token: a credential.
		channel.SecretField("incoming_webhook_url", "Incoming webhook URL of one space (replies to that space go through it)", "GOOGLE_CHAT_WEBHOOK_URL", false),
		channel.URLField("api_url", "Chat API base URL", "https://chat.googleapis.com/v1", false),
		channel.URLField("token_url", "OAuth token URL", "https://oauth2.googleapis.com/token", false),
		channel.TextField("audience", "Authentication audience: the Cloud project number (or the app's endpoint URL)", false),
		channel.URLField("certs_url", "Public keys of Chat's bearer tokens (default: Google's, by audience type)", "", false)}}

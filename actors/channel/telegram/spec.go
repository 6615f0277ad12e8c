package telegram

import "github.com/fangd/fangd/actors/channel"

// The telegram adapter registers its configuration schema and its builder
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

// spec is the telegram channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "telegram", DisplayName: "Telegram", Category: "messaging", Description: "Telegram Bot API: long polling, or webhook mode with a secret token",
	Filters: channel.Filters{Users: "allowed_users", Chats: "allowed_chats"},
	Fields: []channel.Field{
		channel.SecretField("bot_token", "Bot token", "TELEGRAM_BOT_TOKEN", true),
		channel.URLField("api_url", "Bot API base URL", "https://api.telegram.org", false),
		channel.ListField("allowed_users", "Allowed user ids or usernames", false),
		channel.ListField("allowed_chats", "Allowed chat ids", false),
		channel.NumberField("poll_interval_secs", "Long-poll timeout (seconds)", "30"),
		channel.TextField("webhook_url", "Public webhook URL (enables webhook mode)", false),
		channel.SecretField("webhook_secret", "Webhook secret token", "TELEGRAM_WEBHOOK_SECRET", false),
	}}

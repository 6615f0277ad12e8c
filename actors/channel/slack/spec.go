package slack

import "github.com/fangd/fangd/actors/channel"

// The slack adapter registers its configuration schema and its builder
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

// spec is the slack channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "slack", DisplayName: "Slack", Category: "messaging", Description: "Slack app over Socket Mode (or the Events API webhook) and the Web API",
	Filters: channel.Filters{Users: "allowed_users", Chats: "allowed_channels", Spaces: "allowed_teams"}, Account: []string{"bot_token"},
	Fields: []channel.Field{
		channel.SecretField("bot_token", "Bot token (xoxb-)", "SLACK_BOT_TOKEN", true),
		channel.SecretField("app_token", "App-level token (xapp-) for Socket Mode", "SLACK_APP_TOKEN", false),
		channel.SecretField("signing_secret", "Signing secret (Events API webhook mode)", "SLACK_SIGNING_SECRET", false),
		channel.URLField("api_url", "Web API base URL", "https://slack.com/api/", false),
		channel.ListField("allowed_channels", "Allowed channel ids", false),
		channel.ListField("allowed_users", "Allowed user ids", false),
		channel.ListField("allowed_teams", "Allowed team ids", false),
	}}

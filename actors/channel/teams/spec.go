package teams

import "github.com/fangd/fangd/actors/channel"

// The teams adapter registers its configuration schema and its builder
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

// spec is the teams channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "teams", DisplayName: "Microsoft Teams", Category: "enterprise", Description: "Bot Framework activities webhook in, connector REST out",
	Filters: channel.Filters{Users: "allowed_users", Chats: "allowed_conversations", Spaces: "allowed_tenants"}, Account: []string{"app_id"},
	Fields: []channel.Field{channel.SecretField("app_password", "App password (client secret)", "TEAMS_APP_PASSWORD", true), channel.TextField("app_id", "App id", true),
		channel.URLField("auth_url", "Token endpoint URL", "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token", false),
		channel.URLField("openid_url", "Bot Framework OpenID metadata URL", "https://login.botframework.com/v1/.well-known/openidconfiguration", false),
		channel.ListField("allowed_users", "Allowed user ids", false), channel.ListField("allowed_conversations", "Allowed conversation ids", false),
		channel.ListField("allowed_tenants", "Allowed tenant ids", false)}}

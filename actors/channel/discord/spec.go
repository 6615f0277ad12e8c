package discord

import "github.com/fangd/fangd/actors/channel"

// The discord adapter registers its configuration schema and its builder
// with the channel runtime when the package is linked in (see
// actors/channel/adapters). Whether it takes webhooks is not declared:
// it follows from *Adapter implementing channel.WebhookReceiver.
func init() { channel.Register[*Adapter](spec, New) }

// The optional interfaces *Adapter implements, checked at compile time:
// the runtime finds them by type assertion, so a method whose signature
// drifted would otherwise silently switch the behaviour off.
var (
	_ channel.Adapter = (*Adapter)(nil)
)

// spec is the discord channel's configuration schema: LibreFang's keys
// (secrets without the "_env" suffix); the runtime appends the fields
// every channel has (agent_name, enabled, watchdog_secs). New checks
// what the schema cannot (URL syntax, enum values).
var spec = channel.Spec{Name: "discord", DisplayName: "Discord", Category: "messaging", Description: "Discord bot over the gateway websocket and REST API",
	Filters: channel.Filters{Users: "allowed_users", Chats: "allowed_channels", Spaces: "allowed_guilds"},
	Fields: []channel.Field{
		channel.SecretField("bot_token", "Bot token", "DISCORD_BOT_TOKEN", true),
		channel.URLField("api_url", "REST API base URL (discordgo speaks v9)", "https://discord.com/api/v9", false),
		channel.ListField("allowed_guilds", "Allowed guild ids", false),
		channel.ListField("allowed_channels", "Allowed channel ids", false),
		channel.ListField("allowed_users", "Allowed user ids or names", false),
		channel.NumberField("intents", "Gateway intents bitmask", "37377"),
		channel.BoolField("require_mention", "In servers, answer only messages that mention the bot", "true"),
	}}

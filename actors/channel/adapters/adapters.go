// Package adapters is the table of chat platform adapters built into fangd:
// one line per adapter, each implemented in its own package under
// actors/channel/<platform>/. A registry adapter with no line here is listed
// with supported: false and configuring it is a 501.
package adapters

import (
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/discord"
	"github.com/fangd/fangd/actors/channel/email"
	"github.com/fangd/fangd/actors/channel/googlechat"
	"github.com/fangd/fangd/actors/channel/gotify"
	"github.com/fangd/fangd/actors/channel/irc"
	"github.com/fangd/fangd/actors/channel/matrix"
	"github.com/fangd/fangd/actors/channel/mattermost"
	"github.com/fangd/fangd/actors/channel/ntfy"
	"github.com/fangd/fangd/actors/channel/slack"
	"github.com/fangd/fangd/actors/channel/teams"
	"github.com/fangd/fangd/actors/channel/telegram"
	"github.com/fangd/fangd/actors/channel/webhook"
	"github.com/fangd/fangd/actors/channel/whatsapp"
	"github.com/fangd/fangd/actors/channel/xmpp"
)

// Builders returns the built-in adapters by registry name.
func Builders() channel.Builders {
	return channel.Builders{
		"discord":     discord.New,
		"email":       email.New,
		"google_chat": googlechat.New,
		"gotify":      gotify.New,
		"irc":         irc.New,
		"matrix":      matrix.New,
		"mattermost":  mattermost.New,
		"ntfy":        ntfy.New,
		"slack":       slack.New,
		"teams":       teams.New,
		"telegram":    telegram.New,
		"webhook":     webhook.New,
		"whatsapp":    whatsapp.New,
		"xmpp":        xmpp.New,
	}
}

// Package adapters is the table of chat platform adapters built into fangd:
// one line per adapter, each implemented in its own package under
// actors/channel/<platform>/. A registry adapter with no line here is listed
// with supported: false and configuring it is a 501.
package adapters

import (
	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/discord"
	"github.com/fangd/fangd/actors/channel/email"
	"github.com/fangd/fangd/actors/channel/irc"
	"github.com/fangd/fangd/actors/channel/matrix"
	"github.com/fangd/fangd/actors/channel/slack"
	"github.com/fangd/fangd/actors/channel/telegram"
	"github.com/fangd/fangd/actors/channel/xmpp"
)

// Builders returns the built-in adapters by registry name.
func Builders() channel.Builders {
	return channel.Builders{
		"discord":  discord.New,
		"email":    email.New,
		"irc":      irc.New,
		"matrix":   matrix.New,
		"slack":    slack.New,
		"telegram": telegram.New,
		"xmpp":     xmpp.New,
	}
}

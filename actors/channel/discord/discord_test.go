package discord_test

import (
	"strings"
	"testing"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/discord"
	"github.com/fangd/fangd/actors/channel/discord/discordtest"
)

const token = "MTAx.fake.bot-token"

func setup(t *testing.T, tok string) (*channeltest.Harness, *discordtest.Server) {
	fake := channeltest.Cleanup(t, discordtest.New(token))
	h := channeltest.New(t, channel.Builders{"discord": discord.New})
	h.Configure("discord", map[string]any{"token": tok, "api_url": fake.APIURL(), "agent_name": channeltest.AgentName})
	return h, fake
}

func TestDiscordRoundTrip(t *testing.T) {
	h, fake := setup(t, token)
	v := h.WaitState("discord", channel.StateConnected)
	if v.Identity == nil || v.Identity.Name != "fangdbot" {
		t.Fatalf("identity = %+v", v.Identity)
	}
	h.WaitFor("gateway session", func() bool { return fake.Connected() == 1 })
	dm := fake.UserMessage("c-dm", "", "42", "hello in a DM", false)
	h.WaitFor("DM reply", func() bool { return len(fake.Sent()) == 1 })
	if s := fake.Sent()[0]; s.ChannelID != "c-dm" || s.Content != "echo: hello in a DM" || s.ReplyTo != dm {
		t.Fatalf("sent = %+v", s)
	}
	fake.UserMessage("c-guild", "g1", "42", "not for the bot", false)
	fake.UserMessage("c-guild", "g1", "42", "what's up?", true)
	h.WaitFor("guild reply", func() bool { return len(fake.Sent()) == 2 })
	if s := fake.Sent()[1]; s.ChannelID != "c-guild" || s.Content != "echo: what's up?" {
		t.Fatalf("sent = %+v", s)
	}
	turns := h.Agents.Turns()
	if len(turns) != 2 || turns[1].Session != "channel:discord:c-guild" {
		t.Fatalf("turns = %+v", turns)
	}
}

func TestDiscordLongReplySplit(t *testing.T) {
	h, fake := setup(t, token)
	h.Agents.SetReply(func(_, _ string) (string, error) { return strings.Repeat("lorem ipsum ", 400), nil })
	h.WaitState("discord", channel.StateConnected)
	h.WaitFor("gateway session", func() bool { return fake.Connected() == 1 })
	fake.UserMessage("c1", "", "42", "essay please", false)
	h.WaitFor("three pieces", func() bool { return len(fake.Sent()) == 3 })
}

func TestDiscordOutageAndQueuedReplies(t *testing.T) {
	h, fake := setup(t, token)
	h.WaitState("discord", channel.StateConnected)
	h.SendThroughOutage(fake, "discord", "c7", "sent while down")
	h.WaitFor("queued message posted", func() bool { return len(fake.Sent()) == 1 })
	if s := fake.Sent()[0]; s.ChannelID != "c7" || s.Content != "sent while down" {
		t.Fatalf("sent = %+v", s)
	}
	h.WaitFor("gateway session", func() bool { return fake.Connected() == 1 })
	fake.UserMessage("c-dm", "", "42", "are you back", false)
	h.WaitFor("reply after recovery", func() bool { return len(fake.Sent()) == 2 })
}

package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

const (
	replyChannels = 100
	// replyChats is how many chats of each channel the traffic is spread
	// over. Telegram allows a bot about one message per second per chat
	// (burst 3), and fangd paces replies by that; at 5 messages/s per
	// channel ten chats keep every chat at 0.5/s, so the pacing never holds
	// a reply back and what is measured is fangd's own path.
	replyChats = 10
	// replyWarmup runs the same traffic unmeasured first: sessions are
	// created and connections dialled before the clock counts.
	replyWarmup = 2 * time.Second
	// replyDrain bounds the wait for the last replies.
	replyDrain = 60 * time.Second
	llmKeyEnv  = "BENCH_FAKE_LLM_KEY"
)

// runChannelReply measures what fangd adds to an inbound message's round
// trip: 100 Telegram channels, each on its own local Bot API fake and bound
// to its own agent, whose model is a local OpenAI-compatible fake that
// answers after a fixed latency. Messages are made available at the fakes
// at a fixed total rate, round-robin over channels and chats; for each one
// the time from UserMessage (the update becomes visible to the waiting
// long poll) until the reply's sendMessage reaches the fake, minus the
// LLM's fixed latency, is fangd's overhead.
func runChannelReply(ctx context.Context, env *Env) ([]Row, error) {
	rate, latency := env.Opts.ReplyRate, env.Opts.LLMLatency
	if rate <= 0 {
		return nil, fmt.Errorf("-reply-rate must be positive")
	}
	key := "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	llm := llmtest.NewOpenAI(key)
	env.onClose(llm.Close)
	llm.SetLatency(latency)
	llm.SetOutputTokens(4)

	// sentAt[seq] is when the reply to message seq reached its fake;
	// heldFor[seq] how long the LLM fake really held its request (the
	// latency plus its timer's overshoot, which is this process's and not
	// fangd's time).
	total := int((replyWarmup+env.Opts.ReplyFor).Seconds()*float64(rate)) + 1
	sentAt := make([]atomic.Int64, total)
	heldFor := make([]atomic.Int64, total)
	llm.OnHeld = func(r llmtest.Request, held time.Duration) {
		if n := len(r.Messages); n > 0 {
			if seq, err := strconv.Atoi(strings.TrimPrefix(r.Messages[n-1].Content, "m")); err == nil && seq >= 0 && seq < total {
				heldFor[seq].Store(int64(held))
			}
		}
	}
	var unmatched atomic.Int64
	onSent := func(s telegramtest.Sent) {
		now := time.Now().UnixNano()
		seq, err := strconv.Atoi(strings.TrimPrefix(s.Text, "echo: m"))
		if err != nil || seq < 0 || seq >= total || !sentAt[seq].CompareAndSwap(0, now) {
			unmatched.Add(1)
		}
	}
	fakes := make([]*telegramtest.Server, replyChannels)
	for i := range fakes {
		f := telegramtest.New(fmt.Sprintf("%d:reply-bench", 200000+i))
		f.OnSent = onSent
		env.onClose(f.Close)
		fakes[i] = f
	}

	home, err := env.tempDir("fangd-reply-")
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`
[providers.benchllm]
api = "openai"
base_url = %q
trusted = true # a local fake on loopback
api_key_env = %q

[[models]]
provider = "benchllm"
id = "bench-model"
input_per_m = 0.0
output_per_m = 0.0
context_window = 128000
`, llm.BaseURL, llmKeyEnv)
	d, err := StartDaemonWith(ctx, env.Opts.Fangd, home, cfg, []string{llmKeyEnv + "=" + key})
	if d != nil {
		defer d.Stop()
	}
	if err != nil {
		return nil, err
	}
	env.logf("channel-reply: creating %d agents and %d Telegram channels", replyChannels, replyChannels)
	for i := range replyChannels {
		if err := requestWant(ctx, d, "POST", "/api/agents",
			map[string]any{"name": fmt.Sprintf("replier-%03d", i), "model": "benchllm/bench-model"}, 201, nil); err != nil {
			return nil, fmt.Errorf("create agent %d: %w", i, err)
		}
		body := map[string]any{"adapter": "telegram", "token": fmt.Sprintf("%d:reply-bench", 200000+i),
			"api_url": fakes[i].URL(), "poll_interval_secs": 30, "agent_name": fmt.Sprintf("replier-%03d", i)}
		if err := requestWant(ctx, d, "POST", fmt.Sprintf("/api/channels/reply-%03d/configure", i), body, 200, nil); err != nil {
			return nil, fmt.Errorf("configure reply-%03d: %w", i, err)
		}
	}
	if _, err := waitConnected(ctx, d, replyChannels, 60*time.Second); err != nil {
		return nil, err
	}

	// One generator keeps the schedule: message i is due at begin+i/rate.
	// When it falls behind (a busy machine) it sends at once rather than
	// skipping, and the achieved rate is reported.
	env.logf("channel-reply: %d msg/s for %s (after a %s warm-up), LLM latency %s", rate, env.Opts.ReplyFor, replyWarmup, latency)
	madeAt := make([]int64, total)
	interval := time.Second / time.Duration(rate)
	begin := time.Now()
	warm := int(replyWarmup.Seconds() * float64(rate))
	var measuredFrom, measuredTo time.Time
	for i := range total {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if wait := time.Until(begin.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		ch := i % replyChannels
		chat := int64(1000 + (i/replyChannels)%replyChats)
		if i == warm {
			measuredFrom = time.Now()
		}
		madeAt[i] = time.Now().UnixNano()
		fakes[ch].UserMessage(chat, chat, "bench", "m"+strconv.Itoa(i))
	}
	measuredTo = time.Now()

	deadline := time.Now().Add(replyDrain)
	missing := 0
	for {
		missing = 0
		for i := range total {
			if sentAt[i].Load() == 0 {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if missing > 0 {
		return nil, fmt.Errorf("%d of %d messages got no reply within %s of the last one", missing, total, replyDrain)
	}
	if n := unmatched.Load(); n > 0 {
		return nil, fmt.Errorf("%d replies did not match a message (or came twice)", n)
	}

	var last int64
	for i := range total {
		last = max(last, sentAt[i].Load())
	}
	lag := time.Duration(last - measuredTo.UnixNano())
	over := make([]time.Duration, 0, total-warm)
	var slop time.Duration
	for i := warm; i < total; i++ {
		held := time.Duration(heldFor[i].Load())
		if held == 0 {
			held = latency
		}
		slop = max(slop, held-latency)
		over = append(over, time.Duration(sentAt[i].Load()-madeAt[i])-held)
	}
	slices.Sort(over)
	pct := func(p float64) time.Duration { return over[min(len(over)-1, int(p*float64(len(over))))] }
	p50, p99 := pct(0.50), pct(0.99)
	achieved := float64(len(over)) / measuredTo.Sub(measuredFrom).Seconds()
	label := fmt.Sprintf("inbound -> agent -> reply overhead, %d msg/s over %d channels", rate, replyChannels)
	return []Row{
		{Metric: label + ", p99", Value: fmt.Sprintf("%s (p50 %s, max %s)", ms(p99), ms(p50), ms(over[len(over)-1])),
			Target: "< 2 ms", Verdict: verdict(p99 < 2*time.Millisecond)},
		infoRow("  its load", fmt.Sprintf("%d messages in %s (%.0f msg/s sent), LLM latency %s subtracted as the fake really held each request (its timer overshot by up to %s); last reply %s after the last message",
			len(over), measuredTo.Sub(measuredFrom).Round(time.Millisecond), achieved, latency, ms(slop), ms(lag))),
	}, nil
}

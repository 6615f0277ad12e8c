package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

// idleChannels is how many channels the channels-idle scenario runs.
const idleChannels = 1000

// runChannelsIdle measures what 1,000 configured, idle channels cost:
// Telegram bots long-polling a local Bot API fake (one fake serving every
// token). It configures them through the API on a fresh daemon, restarts
// the daemon on the same home, and reports the time from process start
// until all of them are connected again, and the RSS above the same
// daemon's RSS before any channel existed.
func runChannelsIdle(ctx context.Context, env *Env) ([]Row, error) {
	fake := telegramtest.New("0:unused")
	fake.AnyToken = true
	env.onClose(fake.Close)
	home, err := env.tempDir("fangd-channels-")
	if err != nil {
		return nil, err
	}
	d, err := StartDaemon(ctx, env.Opts.Fangd, home)
	if d != nil {
		defer d.Stop()
	}
	if err != nil {
		return nil, err
	}
	base, err := d.SettledRSS(ctx)
	if err != nil {
		return nil, err
	}
	env.logf("channels-idle: configuring %d Telegram channels", idleChannels)
	if err := configureChannels(ctx, d, fake.URL()); err != nil {
		return nil, err
	}
	if _, err := waitConnected(ctx, d, idleChannels, 60*time.Second); err != nil {
		return nil, err
	}
	if err := d.Stop(); err != nil {
		return nil, err
	}

	begin := time.Now()
	d2, err := StartDaemon(ctx, env.Opts.Fangd, home)
	if d2 != nil {
		defer d2.Stop()
	}
	if err != nil {
		return nil, err
	}
	if _, err := waitConnected(ctx, d2, idleChannels, 60*time.Second); err != nil {
		return nil, err
	}
	startAll := time.Since(begin)
	rss, err := d2.SettledRSS(ctx)
	if err != nil {
		return nil, err
	}
	extra := rss - base
	return []Row{
		{Metric: fmt.Sprintf("%d idle channels: process start to all connected", idleChannels), Value: ms(startAll),
			Target: "< 2 s", Verdict: verdict(startAll < 2*time.Second)},
		{Metric: fmt.Sprintf("%d idle channels: RSS above an empty daemon", idleChannels),
			Value: fmt.Sprintf("%s (%s total)", mib(extra), mib(rss)), Target: "< 50 MiB", Verdict: verdict(extra < 50<<20)},
	}, nil
}

func channelRequest(ctx context.Context, d *Daemon, method, path string, body any) (*http.Response, error) {
	var rd *bytes.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.URL(path), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return http.DefaultClient.Do(req)
}

// requestWant sends one request and checks its status, decoding into out.
func requestWant(ctx context.Context, d *Daemon, method, path string, body any, want int, out any) error {
	resp, err := channelRequest(ctx, d, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// configureChannels creates the channels, 8 requests at a time.
func configureChannels(ctx context.Context, d *Daemon, api string) error {
	return forEach(ctx, 8, idleChannels, func(i int) error {
		body := map[string]any{"adapter": "telegram", "token": fmt.Sprintf("%d:bench-token", 100000+i),
			"api_url": api, "poll_interval_secs": 30}
		res, err := channelRequest(ctx, d, "POST", fmt.Sprintf("/api/channels/tg-%04d/configure", i), body)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("configure tg-%04d: HTTP %d", i, res.StatusCode)
		}
		return nil
	})
}

// waitConnected polls the channel list until n channels are connected.
func waitConnected(ctx context.Context, d *Daemon, n int, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		res, err := channelRequest(ctx, d, "GET", "/api/channels?configured=true", nil)
		if err != nil {
			return 0, err
		}
		var list struct {
			Channels []struct {
				Status string `json:"status"`
			} `json:"channels"`
		}
		err = json.NewDecoder(res.Body).Decode(&list)
		res.Body.Close()
		if err != nil {
			return 0, err
		}
		up := 0
		for _, c := range list.Channels {
			if c.Status == "connected" {
				up++
			}
		}
		if up >= n {
			return up, nil
		}
		if time.Now().After(deadline) {
			return up, fmt.Errorf("only %d of %d channels connected after %s", up, n, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

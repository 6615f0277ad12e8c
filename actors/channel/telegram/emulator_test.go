package telegram_test

// The same adapter against telegram-test-api, an independent Bot API
// emulator from npm (installed by `make test-deps`, or here on first use).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/channeltest"
	"github.com/fangd/fangd/actors/channel/telegram"
)

const emulatorVersion = "telegram-test-api@4.2.1"

// testDeps is where `make test-deps` installs third-party test peers.
func testDeps() string {
	if d := os.Getenv("FANGD_TEST_DEPS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "fangd-test")
}

func startEmulator(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testDeps(), "npm")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "telegram-test-api", "package.json")); err != nil {
		if _, err := exec.LookPath("npm"); err != nil {
			t.Fatal("npm is needed for the Telegram emulator test: run `make test-deps`")
		}
		os.MkdirAll(dir, 0o755)
		out, err := exec.Command("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", emulatorVersion).CombinedOutput()
		if err != nil {
			t.Fatalf("npm install %s: %v\n%s", emulatorVersion, err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	script := `const S = require('telegram-test-api');
const s = new S({port: ` + itoa(port) + `, host: '127.0.0.1', storeTimeout: 600});
s.start().then(() => console.log('ready'));
process.stdin.on('end', () => s.stop().then(() => process.exit(0)));
process.stdin.resume();`
	cmd := exec.Command("node", "-e", script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "ready") {
				ready <- true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("telegram-test-api did not start: %s", stderr.String())
	}
	return "http://127.0.0.1:" + itoa(port)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func post(t *testing.T, url string, body any, out any) {
	t.Helper()
	raw, _ := json.Marshal(body)
	res, err := http.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if out != nil {
		json.NewDecoder(res.Body).Decode(out)
	}
}

func TestAgainstTelegramTestAPI(t *testing.T) {
	api := startEmulator(t)
	h := channeltest.New(t, channel.Builders{"telegram": telegram.New})
	v := h.Connect("telegram", map[string]any{"token": token, "agent_name": channeltest.AgentName, "api_url": api})
	if v.Identity == nil || v.Identity.Name != "@TestNameBot" {
		t.Fatalf("identity = %+v", v.Identity)
	}
	// A user writes to the bot through the emulator's client API.
	post(t, api+"/sendMessage", map[string]any{"botToken": token, "text": "hi emulator", "date": time.Now().Unix(),
		"from": map[string]any{"id": 5, "first_name": "Ann", "username": "ann", "is_bot": false},
		"chat": map[string]any{"id": 5, "first_name": "Ann", "username": "ann", "type": "private"}}, nil)
	var got struct {
		Result []struct {
			Message struct {
				Text   string `json:"text"`
				ChatID any    `json:"chat_id"`
			} `json:"message"`
		} `json:"result"`
	}
	h.WaitFor("the bot's reply in the emulator", func() bool {
		post(t, api+"/getUpdatesHistory", map[string]any{"token": token}, &got)
		for _, r := range got.Result {
			if r.Message.Text == "echo: hi emulator" {
				return true
			}
		}
		return false
	})
	if turns := h.Agents.Turns(); len(turns) != 1 || turns[0].Session != "channel:telegram:5" {
		t.Fatalf("turns = %+v", turns)
	}
}

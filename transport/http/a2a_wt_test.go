package http

import (
	"bufio"
	"context"
	nethttp "net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/a2aproject/a2a-go/v2/a2a"

	"github.com/fangd/fangd/actors/a2a"
)

// A stream outlives the server's write timeout: fasthttp sets one write
// deadline per response, which would cut a long agent turn's stream.
func TestA2AStreamOutlivesTheWriteTimeout(t *testing.T) {
	t.Parallel()
	ts := newA2AServer(t, func(c *Config) { c.WriteTimeout = time.Second })
	body := `{"jsonrpc":"2.0","id":"s1","method":"SendStreamingMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"block"}]}}}`
	req, _ := nethttp.NewRequest("POST", ts.url+"/a2a/agents/alpha", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := (&nethttp.Client{Transport: &nethttp.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-ts.agents.started
	// Three times the write timeout later, cancel: the stream must still
	// carry the final event.
	go func() {
		time.Sleep(3 * time.Second)
		admin := context.WithValue(context.Background(), a2a.CallerKey, a2a.Caller{Admin: true})
		list, err := ts.svc.Handler("").ListTasks(admin, &sdk.ListTasksRequest{})
		if err != nil || len(list.Tasks) != 1 {
			t.Errorf("list: %v %v", list, err)
			return
		}
		ts.svc.Handler("").CancelTask(admin, &sdk.CancelTaskRequest{ID: list.Tasks[0].ID})
	}()
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, data)
		}
	}
	if sc.Err() != nil || len(events) != 2 || !strings.Contains(events[1], "TASK_STATE_CANCELED") {
		t.Fatalf("stream ended with %v after %d events: %v", sc.Err(), len(events), events)
	}
}

package http

import (
	"bytes"
	"io"
	nethttp "net/http"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkA2AJSONRPCSendMessage is the whole path of a blocking A2A
// SendMessage over HTTP: fasthttp, auth, the SDK's JSON-RPC handler, the
// task actor, two journal writes, a zero-latency agent turn, the JSON
// answer. 64 keep-alive clients in the same process share the 2 cores
// with the server, so the number is a floor.
func BenchmarkA2AJSONRPCSendMessage(b *testing.B) {
	// The GCRA limiter would (rightly) throttle one client IP at this rate.
	ts := newA2AServer(b, func(c *Config) { c.RateLimitPerMinute = 0 })
	url := ts.url + "/a2a/agents/" + agentA.ID
	client := &nethttp.Client{Transport: &nethttp.Transport{MaxIdleConnsPerHost: 128}}
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	cpu0 := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			body := `{"jsonrpc":"2.0","id":` + strconv.FormatInt(i, 10) + `,"method":"SendMessage","params":{"message":{"messageId":"m` +
				strconv.FormatInt(i, 10) + `","role":"ROLE_USER","parts":[{"text":"bench"}]}}}`
			req, _ := nethttp.NewRequest("POST", url, bytes.NewBufferString(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testKey)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(out, []byte("TASK_STATE_COMPLETED")) {
				b.Fatalf("%d %s", resp.StatusCode, out)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
	// Client and server share the process: this is both sides' CPU.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu_us/op")
}

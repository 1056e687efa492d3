package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/agent/serve"
	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/examples/models/mlp"
)

// inferResponse is the OIP inference response (or error) as a client reads it.
type inferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Outputs      []struct {
		Name     string    `json:"name"`
		Datatype string    `json:"datatype"`
		Shape    []int64   `json:"shape"`
		Data     []float32 `json:"data"`
	} `json:"outputs"`
	Error string `json:"error"`
}

// windowRequest is an OIP request for the example models; data is flat or
// nested.
func windowRequest(id string, shape []int64, data any) []byte {
	b, _ := json.Marshal(map[string]any{
		"id":     id,
		"inputs": []map[string]any{{"name": mlp.InputName, "shape": shape, "datatype": "FP32", "data": data}},
	})
	return b
}

// startHTTP serves fl over the OIP HTTP front end on loopback.
func startHTTP(t testing.TB, fl *fleet, opts serve.HTTPOptions) *httptest.Server {
	srv := httptest.NewServer(serve.NewHTTP(fl, opts))
	t.Cleanup(srv.Close)
	return srv
}

// post sends body to path and decodes the answer.
func post(t testing.TB, client *http.Client, url string, body []byte) (int, inferResponse, http.Header) {
	t.Helper()
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	var r inferResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("response %d is not JSON: %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, r, resp.Header
}

// get fetches url and returns the status and body; for an error body, the
// body is the error message.
func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e struct {
		Error string `json:"error"`
	}
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(raw, &e); err != nil || e.Error == "" {
			t.Errorf("GET %s: status %d without an error message: %s", url, resp.StatusCode, raw)
		}
		return resp.StatusCode, []byte(e.Error)
	}
	return resp.StatusCode, raw
}

func TestHTTPInferMatchesReference(t *testing.T) {
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	fl.serve("vibration-batch", models.FileBatch, v1)
	srv := startHTTP(t, fl, serve.HTTPOptions{})
	rng := rand.New(rand.NewPCG(1, 2))

	t.Run("fixed shape, flat data", func(t *testing.T) {
		for i := range 10 {
			windows := randomWindows(rng, 1)
			id := fmt.Sprintf("req-%d", i)
			status, r, _ := post(t, srv.Client(), srv.URL+"/v2/models/vibration/infer", windowRequest(id, []int64{1, mlp.InputSize}, windows))
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, r.Error)
			}
			if r.ModelName != "vibration" || r.ModelVersion != v1 || r.ID != id {
				t.Errorf("model_name %q, model_version %q, id %q", r.ModelName, r.ModelVersion, r.ID)
			}
			if len(r.Outputs) != 1 || r.Outputs[0].Name != mlp.OutputName || r.Outputs[0].Datatype != "FP32" || !slices.Equal(r.Outputs[0].Shape, []int64{1, 1}) {
				t.Fatalf("outputs = %+v", r.Outputs)
			}
			checkScores(t, r.ModelVersion, windows, r.Outputs[0].Data)
		}
	})
	t.Run("batch model, nested data, versioned path", func(t *testing.T) {
		for _, batch := range []int{1, 3, 8} {
			windows := randomWindows(rng, batch)
			body := windowRequest("", []int64{int64(batch), mlp.InputSize}, nested(windows))
			status, r, _ := post(t, srv.Client(), srv.URL+"/v2/models/vibration-batch/versions/"+v1+"/infer", body)
			if status != http.StatusOK {
				t.Fatalf("batch %d: status %d: %s", batch, status, r.Error)
			}
			if !slices.Equal(r.Outputs[0].Shape, []int64{int64(batch), 1}) {
				t.Errorf("shape = %v", r.Outputs[0].Shape)
			}
			checkScores(t, r.ModelVersion, windows, r.Outputs[0].Data)
		}
	})
	t.Run("outputs picked by name", func(t *testing.T) {
		windows := randomWindows(rng, 1)
		body, _ := json.Marshal(map[string]any{
			"inputs":  []map[string]any{{"name": mlp.InputName, "shape": []int{1, mlp.InputSize}, "datatype": "FP32", "data": windows}},
			"outputs": []map[string]any{{"name": mlp.OutputName}},
		})
		status, r, _ := post(t, srv.Client(), srv.URL+"/v2/models/vibration/infer", body)
		if status != http.StatusOK || len(r.Outputs) != 1 {
			t.Fatalf("status %d: %+v", status, r)
		}
		checkScores(t, r.ModelVersion, windows, r.Outputs[0].Data)
	})
}

func TestHTTPMetadata(t *testing.T) {
	fl := newFleet(t)
	srv := startHTTP(t, fl, serve.HTTPOptions{ServerName: "edge-7", ServerVersion: "0.9.0"})

	if status, body := get(t, srv.URL+"/v2/health/live"); status != http.StatusOK || len(body) != 0 {
		t.Errorf("live: %d %s", status, body)
	}
	if status, body := get(t, srv.URL+"/v2/health/ready"); status != http.StatusServiceUnavailable || !strings.Contains(string(body), "no model") {
		t.Errorf("ready without models: %d %s", status, body)
	}
	fl.serve("vibration", models.FileV1, v1)
	fl.serve("vibration-batch", models.FileBatch, v1)
	if status, body := get(t, srv.URL+"/v2/health/ready"); status != http.StatusOK {
		t.Errorf("ready: %d %s", status, body)
	}

	status, body := get(t, srv.URL+"/v2")
	var server struct {
		Name       string   `json:"name"`
		Version    string   `json:"version"`
		Extensions []string `json:"extensions"`
	}
	if err := json.Unmarshal(body, &server); err != nil || status != http.StatusOK || server.Name != "edge-7" || server.Version != "0.9.0" || server.Extensions == nil {
		t.Errorf("server metadata: %d %s (%v)", status, body, err)
	}

	type tensor struct {
		Name     string  `json:"name"`
		Datatype string  `json:"datatype"`
		Shape    []int64 `json:"shape"`
	}
	type metadata struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
		Platform string   `json:"platform"`
		Inputs   []tensor `json:"inputs"`
		Outputs  []tensor `json:"outputs"`
	}
	for _, path := range []string{"/v2/models/vibration-batch", "/v2/models/vibration-batch/versions/" + v1} {
		status, body = get(t, srv.URL+path)
		var md metadata
		if err := json.Unmarshal(body, &md); err != nil || status != http.StatusOK {
			t.Fatalf("%s: %d %s", path, status, body)
		}
		want := metadata{Name: "vibration-batch", Versions: []string{v1}, Platform: "onnxruntime_onnx",
			Inputs:  []tensor{{mlp.InputName, "FP32", []int64{-1, mlp.InputSize}}},
			Outputs: []tensor{{mlp.OutputName, "FP32", []int64{-1, 1}}}}
		if got, _ := json.Marshal(md); !bytes.Equal(got, mustMarshal(want)) {
			t.Errorf("%s = %s, want %s", path, got, mustMarshal(want))
		}
	}

	for _, tc := range []struct {
		path    string
		status  int
		message string
	}{
		{"/v2/models/vibration/ready", http.StatusOK, ""},
		{"/v2/models/vibration/versions/" + v1 + "/ready", http.StatusOK, ""},
		{"/v2/models/vibration/versions/" + v2 + "/ready", http.StatusNotFound, `version "2.0.0" is not serving; version "1.0.0" is`},
		{"/v2/models/vibration/versions/" + v2, http.StatusNotFound, "is not serving"},
		{"/v2/models/nope", http.StatusNotFound, `no model "nope"`},
		{"/v2/models/nope/ready", http.StatusNotFound, `no model "nope"`},
		{"/v3/anything", http.StatusNotFound, "Open Inference Protocol under /v2"},
	} {
		status, body := get(t, srv.URL+tc.path)
		if status != tc.status || !strings.Contains(string(body), tc.message) {
			t.Errorf("GET %s = %d %s, want %d with %q", tc.path, status, body, tc.status, tc.message)
		}
	}

	fl.setReady("vibration", false)
	if status, body := get(t, srv.URL+"/v2/models/vibration/ready"); status != http.StatusServiceUnavailable {
		t.Errorf("model ready while loading: %d %s", status, body)
	}
	if status, body := get(t, srv.URL+"/v2/health/ready"); status != http.StatusServiceUnavailable || !strings.Contains(string(body), `"vibration" is not ready`) {
		t.Errorf("server ready with a model loading: %d %s", status, body)
	}
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestHTTPBadRequests sends what a confused or hostile client would; each
// gets its status and a message that says what is wrong, and the server
// keeps answering good requests.
func TestHTTPBadRequests(t *testing.T) {
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	const limit = 4096
	srv := startHTTP(t, fl, serve.HTTPOptions{MaxBodyBytes: limit})
	window := randomWindows(rand.New(rand.NewPCG(5, 5)), 1)
	infer := srv.URL + "/v2/models/vibration/infer"

	for _, tc := range []struct {
		name    string
		url     string
		body    []byte
		status  int
		message string
	}{
		{"wrong shape", infer, windowRequest("", []int64{1, 32}, window[:32]), 400, "dimension 1 must be 64"},
		{"data does not fill the shape", infer, windowRequest("", []int64{1, 64}, window[:10]), 400, "10 values, shape [1,64] needs 64"},
		{"nested unlike the shape", infer, windowRequest("", []int64{1, 64}, [][]float32{window[:32], window[32:]}), 400, "nested as [2,32]"},
		{"wrong datatype", infer, bytes.Replace(windowRequest("", []int64{1, 64}, window), []byte(`"FP32"`), []byte(`"INT64"`), 1), 400, `is INT64, the model takes FP32`},
		{"unsupported datatype", infer, bytes.Replace(windowRequest("", []int64{1, 64}, window), []byte(`"FP32"`), []byte(`"FP16"`), 1), 400, "not supported"},
		{"NaN as a string", infer, windowRequest("", []int64{1, 1}, []any{"NaN"}), 400, "JSON has no NaN"},
		{"garbage", infer, []byte("{\"inputs\": [ this is not json"), 400, "not valid JSON"},
		{"empty body", infer, nil, 400, "empty"},
		{"unknown field", infer, []byte(`{"inputs":[],"model":"x"}`), 400, `unknown field "model"`},
		{"unknown input name", infer, bytes.Replace(windowRequest("", []int64{1, 64}, window), []byte(`"window"`), []byte(`"samples"`), 1), 400, `unknown input "samples": model "vibration" takes "window" FP32 [1,64]`},
		{"missing input", infer, []byte(`{"inputs":[]}`), 400, "no inputs"},
		{"unknown model", srv.URL + "/v2/models/nope/infer", windowRequest("", []int64{1, 64}, window), 404, `no model "nope"`},
		{"version not serving", srv.URL + "/v2/models/vibration/versions/9.9.9/infer", windowRequest("", []int64{1, 64}, window), 404, `version "9.9.9" is not serving`},
		{"body over the limit", infer, windowRequest("", []int64{1, 64}, make([]float32, limit)), 413, "over this server's limit of 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, r, _ := post(t, srv.Client(), tc.url, tc.body)
			if status != tc.status || !strings.Contains(r.Error, tc.message) {
				t.Errorf("status %d %q, want %d with %q", status, r.Error, tc.status, tc.message)
			}
		})
	}

	t.Run("body over the limit without Content-Length", func(t *testing.T) {
		body := windowRequest("", []int64{1, 64}, make([]float32, limit))
		req, _ := http.NewRequest(http.MethodPost, infer, io.MultiReader(bytes.NewReader(body))) // unknown length: chunked
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(raw), "over this server's limit") {
			t.Errorf("status %d %s", resp.StatusCode, raw)
		}
	})
	t.Run("GET on infer", func(t *testing.T) {
		if status, body := get(t, infer); status != http.StatusMethodNotAllowed {
			t.Errorf("status %d %s", status, body)
		}
	})

	status, r, _ := post(t, srv.Client(), infer, windowRequest("after", []int64{1, 64}, window))
	if status != http.StatusOK {
		t.Fatalf("a good request after the bad ones: %d %s", status, r.Error)
	}
	checkScores(t, r.ModelVersion, window, r.Outputs[0].Data)
}

// TestHTTPBusy: a model at its concurrency limit answers 503 with
// Retry-After, and serves again once a slot frees.
func TestHTTPBusy(t *testing.T) {
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	lim := fl.limit("vibration", 1, 0)
	srv := startHTTP(t, fl, serve.HTTPOptions{})
	window := randomWindows(rand.New(rand.NewPCG(6, 6)), 1)

	release, err := lim.Acquire(context.Background()) // another request holds the only slot
	if err != nil {
		t.Fatal(err)
	}
	status, r, h := post(t, srv.Client(), srv.URL+"/v2/models/vibration/infer", windowRequest("", []int64{1, 64}, window))
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(r.Error, "busy") {
		t.Errorf("busy model: status %d, Retry-After %q, error %q", status, h.Get("Retry-After"), r.Error)
	}
	release()
	if status, r, _ := post(t, srv.Client(), srv.URL+"/v2/models/vibration/infer", windowRequest("", []int64{1, 64}, window)); status != http.StatusOK {
		t.Errorf("after release: %d %s", status, r.Error)
	}
}

// TestHTTPHotSwapUnderLoad: clients hit /infer continuously while the model
// is swapped v1 → v2 → v1 …; no request fails, and every answer is the
// reference score of the version it names.
func TestHTTPHotSwapUnderLoad(t *testing.T) {
	fl := newFleet(t)
	fl.serve("vibration", models.FileV1, v1)
	srv := startHTTP(t, fl, serve.HTTPOptions{})
	const (
		clients = 4
		swaps   = 12
	)
	stop := make(chan struct{})
	var requests, failures atomic.Int64
	seen := sync.Map{}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 99))
			for {
				select {
				case <-stop:
					return
				default:
				}
				windows := randomWindows(rng, 1)
				resp, err := srv.Client().Post(srv.URL+"/v2/models/vibration/infer", "application/json", bytes.NewReader(windowRequest("", []int64{1, 64}, windows)))
				if err != nil {
					failures.Add(1)
					t.Errorf("request: %v", err)
					return
				}
				var r inferResponse
				err = json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				requests.Add(1)
				if err != nil || resp.StatusCode != http.StatusOK {
					failures.Add(1)
					t.Errorf("status %d, error %q (%v)", resp.StatusCode, r.Error, err)
					return
				}
				seen.Store(r.ModelVersion, true)
				checkScores(t, r.ModelVersion, windows, r.Outputs[0].Data)
			}
		})
	}
	files := map[string]string{v1: models.FileV1, v2: models.FileV2}
	version := v1
	for range swaps {
		time.Sleep(20 * time.Millisecond)
		version = map[string]string{v1: v2, v2: v1}[version]
		fl.serve("vibration", files[version], version)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed during %d swaps", failures.Load(), requests.Load(), swaps)
	}
	for _, v := range []string{v1, v2} {
		if _, ok := seen.Load(v); !ok {
			t.Errorf("no answer from version %s in %d requests", v, requests.Load())
		}
	}
	t.Logf("%d requests across %d swaps, none failed", requests.Load(), swaps)
}

// TestServeGracefulShutdown: when the context ends, a request in progress
// finishes and gets its answer, new connections are refused, and Serve
// returns nil.
func TestServeGracefulShutdown(t *testing.T) {
	entered, finish := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(entered) })
		<-finish
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "done")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve.Serve(ctx, ln, h, serve.ServerOptions{ShutdownTimeout: 30 * time.Second}) }()

	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			answer <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer <- string(b)
	}()
	<-entered
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) while a request was in progress", err)
	case <-time.After(100 * time.Millisecond):
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("a new connection was accepted during shutdown")
	}
	close(finish)
	if got := <-answer; got != "done" {
		t.Errorf("request in progress got %q", got)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

// TestServeShutdownTimeout: a request still running after the grace period
// sees its context cancelled, and Serve returns.
func TestServeShutdownTimeout(t *testing.T) {
	entered := make(chan struct{})
	cancelled := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		close(cancelled)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve.Serve(ctx, ln, h, serve.ServerOptions{ShutdownTimeout: 50 * time.Millisecond}) }()
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	cancel()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the request was not cancelled after the grace period")
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func TestListenAndServeBadAddress(t *testing.T) {
	err := serve.ListenAndServe(context.Background(), "256.0.0.1:http", http.NotFoundHandler(), serve.ServerOptions{})
	if err == nil || !strings.Contains(err.Error(), "serve inference API") {
		t.Errorf("ListenAndServe on a bad address = %v", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("error %v does not carry the listen error", err)
	}
}

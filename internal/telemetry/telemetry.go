// Package telemetry wires the mesh's observability: OpenTelemetry traces
// that follow a request from `si ask` through Temporal (the SDK's tracing
// interceptor carries the context in workflow and activity headers) to the
// inference call, the Temporal SDK's metrics in the Prometheus registry next
// to the mesh's own, and those own metrics.
package telemetry

import (
	"context"
	"errors"
	"flag"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
)

// Tracing configures where traces go.
type Tracing struct {
	// Endpoint is an OTLP/gRPC collector (host:port); empty turns tracing off.
	Endpoint string
	Insecure bool
}

// Register adds --otlp-endpoint and --otlp-insecure to fs.
func (t *Tracing) Register(fs *flag.FlagSet) {
	fs.StringVar(&t.Endpoint, "otlp-endpoint", "", "OpenTelemetry collector (OTLP/gRPC host:port) to send traces to; empty sends none")
	fs.BoolVar(&t.Insecure, "otlp-insecure", false, "send traces without TLS (a collector on localhost)")
}

// Provider returns the tracer provider for service: batching to the
// collector when one is configured, else one that records nothing. Call
// shutdown before exiting to send what is buffered.
func (t Tracing) Provider(ctx context.Context, service string) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	if t.Endpoint == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(t.Endpoint)}
	if t.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, nil, err
	}
	p := NewProvider(service, sdktrace.WithBatcher(exp))
	return p, p.Shutdown, nil
}

// NewProvider is an SDK tracer provider for service with the given options
// (an exporter, a span processor).
func NewProvider(service string, opts ...sdktrace.TracerProviderOption) *sdktrace.TracerProvider {
	res := resource.NewSchemaless(semconv.ServiceName(service))
	return sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithResource(res)}, opts...)...)
}

// TemporalInterceptor carries trace context through Temporal: the client
// starts a span for each workflow it starts, and workers continue it in the
// workflow and in each activity.
func TemporalInterceptor(tp trace.TracerProvider) (interceptor.ClientInterceptor, error) {
	return temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{
		Tracer:            tp.Tracer("github.com/superinstance/mesh"),
		TextMapPropagator: propagation.TraceContext{},
	})
}

// HTTPClient wraps base (nil: http.DefaultTransport) so that every request
// is a client span of the context's trace, and carries it in traceparent.
func HTTPClient(tp trace.TracerProvider, c *http.Client) *http.Client {
	out := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	out.Transport = otelhttp.NewTransport(base, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(propagation.TraceContext{}))
	return &out
}

// SDKMetrics is a Temporal metrics handler that exports the SDK's metrics
// (workflow and activity task latencies, poll counts, failures...) to reg.
func SDKMetrics(reg prometheus.Registerer) (client.MetricsHandler, error) {
	if reg == nil {
		return nil, errors.New("no registry for the Temporal SDK's metrics")
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	return temporalotel.NewMetricsHandler(temporalotel.MetricsHandlerOptions{Meter: mp.Meter("temporal-sdk")}), nil
}

// Instruments are what a process needs to be observed: the Prometheus
// registry /metrics serves, the tracer provider, and the Temporal client's
// tracing interceptor and SDK metrics handler (both feeding the same two).
type Instruments struct {
	Registry    *prometheus.Registry
	Tracer      trace.TracerProvider
	Interceptor interceptor.ClientInterceptor
	SDKMetrics  client.MetricsHandler
	// Shutdown sends buffered spans; call it before exiting.
	Shutdown func(context.Context) error
}

// Instrument builds the Instruments for service.
func (t Tracing) Instrument(ctx context.Context, service string) (Instruments, error) {
	in := Instruments{Registry: prometheus.NewRegistry()}
	var err error
	if in.Tracer, in.Shutdown, err = t.Provider(ctx, service); err != nil {
		return in, err
	}
	if in.Interceptor, err = TemporalInterceptor(in.Tracer); err != nil {
		return in, err
	}
	if in.SDKMetrics, err = SDKMetrics(in.Registry); err != nil {
		return in, err
	}
	return in, nil
}

package objectid_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/internal/objectid"
)

// TestSame: spellings of one object must compare equal, spellings of
// different objects must not.
func TestSame(t *testing.T) {
	t.Parallel()
	gw := objectid.Profile{Name: "default", EndpointURL: "http://127.0.0.1:7070"}
	with := func(p objectid.Profile, f func(*objectid.Profile)) objectid.Profile { f(&p); return p }
	ep := func(u string) func(*objectid.Profile) { return func(p *objectid.Profile) { p.EndpointURL = u } }
	aws := func(u, region string) objectid.Profile {
		return objectid.Profile{Name: "aws", EndpointURL: u, Region: region}
	}
	ref := func(p objectid.Profile, bucket, key string) objectid.Ref {
		return objectid.Ref{Profile: p, Bucket: bucket, Key: key}
	}
	for _, tc := range []struct {
		desc string
		a, b objectid.Ref
		want bool
	}{
		// Same object.
		{desc: "identical", a: ref(gw, "b", "x"), b: ref(gw, "b", "x"), want: true},
		{desc: "profile prefix plus key (issue 11)", a: ref(gw, "b", "archive/x.txt"),
			b: ref(with(gw, func(p *objectid.Profile) { p.Name, p.Prefix = "archive", "archive/" }), "b", "x.txt"), want: true},
		{desc: "prefix without its slash", a: ref(gw, "b", "archive/x.txt"),
			b: ref(with(gw, func(p *objectid.Profile) { p.Prefix = "archive" }), "b", "x.txt"), want: true},
		{desc: "trailing slash", a: ref(gw, "b", "x"), b: ref(with(gw, ep("http://127.0.0.1:7070/")), "b", "x"), want: true},
		{desc: "upper-case host and scheme", a: ref(with(gw, ep("http://localhost:7070")), "b", "x"),
			b: ref(with(gw, ep("HTTP://LocalHost:7070")), "b", "x"), want: true},
		{desc: "trailing dot of the host", a: ref(with(gw, ep("https://s3.example.com")), "b", "x"),
			b: ref(with(gw, ep("https://s3.example.com.")), "b", "x"), want: true},
		{desc: "http default port", a: ref(with(gw, ep("http://minio.local")), "b", "x"),
			b: ref(with(gw, ep("http://minio.local:80")), "b", "x"), want: true},
		{desc: "https default port", a: ref(with(gw, ep("https://minio.local:443/")), "b", "x"),
			b: ref(with(gw, ep("https://minio.local")), "b", "x"), want: true},
		{desc: "IPv6 literal spelled long", a: ref(with(gw, ep("http://[::1]:7070")), "b", "x"),
			b: ref(with(gw, ep("http://[0:0:0:0:0:0:0:1]:7070")), "b", "x"), want: true},
		{desc: "IPv4-mapped IPv6 literal", a: ref(with(gw, ep("http://[::ffff:127.0.0.1]:7070")), "b", "x"),
			b: ref(gw, "b", "x"), want: true},
		{desc: "path, trailing slashes", a: ref(with(gw, ep("https://gw.example.com/s3")), "b", "x"),
			b: ref(with(gw, ep("https://gw.example.com/s3//")), "b", "x"), want: true},
		{desc: "AWS: empty endpoint vs global", a: ref(aws("", "us-east-1"), "b", "x"),
			b: ref(aws("https://s3.amazonaws.com", ""), "b", "x"), want: true},
		{desc: "AWS: empty endpoint without region vs regional", a: ref(aws("", ""), "b", "x"),
			b: ref(aws("https://s3.eu-west-1.amazonaws.com", "eu-west-1"), "b", "x"), want: true},
		{desc: "AWS: regional vs dual-stack", a: ref(aws("https://s3.eu-west-1.amazonaws.com", "eu-west-1"), "b", "x"),
			b: ref(aws("https://s3.dualstack.eu-west-1.amazonaws.com", "eu-west-1"), "b", "x"), want: true},
		{desc: "AWS: legacy dash-region", a: ref(aws("https://s3-us-west-2.amazonaws.com", ""), "b", "x"),
			b: ref(aws("https://s3.us-west-2.amazonaws.com/", "us-west-2"), "b", "x"), want: true},
		{desc: "AWS: FIPS and upper case, port 443", a: ref(aws("https://S3-FIPS.us-east-2.amazonaws.com:443", ""), "b", "x"),
			b: ref(aws("", "us-east-2"), "b", "x"), want: true},
		{desc: "AWS: two regions of one partition (bucket names are partition-wide)", a: ref(aws("", "eu-west-1"), "b", "x"),
			b: ref(aws("https://s3.us-east-1.amazonaws.com", "us-east-1"), "b", "x"), want: true},
		{desc: "AWS: http and https", a: ref(aws("http://s3.amazonaws.com", ""), "b", "x"),
			b: ref(aws("", ""), "b", "x"), want: true},
		{desc: "AWS China: regional vs empty endpoint", a: ref(aws("https://s3.cn-north-1.amazonaws.com.cn", ""), "b", "x"),
			b: ref(aws("", "cn-north-1"), "b", "x"), want: true},
		{desc: "name only: same profile name", a: ref(objectid.Profile{Name: "default", NameOnly: true}, "b", "x"),
			b: ref(objectid.Profile{Name: "default", NameOnly: true}, "b", "x"), want: true},

		// Different objects.
		{desc: "other key", a: ref(gw, "b", "x"), b: ref(gw, "b", "y"), want: false},
		{desc: "other bucket", a: ref(gw, "b", "x"), b: ref(gw, "c", "x"), want: false},
		{desc: "key case matters", a: ref(gw, "b", "x"), b: ref(gw, "b", "X"), want: false},
		{desc: "prefix makes another key", a: ref(gw, "b", "x"),
			b: ref(with(gw, func(p *objectid.Profile) { p.Prefix = "archive/" }), "b", "x"), want: false},
		{desc: "other port", a: ref(gw, "b", "x"), b: ref(with(gw, ep("http://127.0.0.1:7071")), "b", "x"), want: false},
		{desc: "http vs https", a: ref(with(gw, ep("http://minio.local")), "b", "x"),
			b: ref(with(gw, ep("https://minio.local")), "b", "x"), want: false},
		{desc: "non-default port is kept", a: ref(with(gw, ep("https://minio.local:80")), "b", "x"),
			b: ref(with(gw, ep("https://minio.local")), "b", "x"), want: false},
		{desc: "other host", a: ref(with(gw, ep("https://a.example.com")), "b", "x"),
			b: ref(with(gw, ep("https://b.example.com")), "b", "x"), want: false},
		{desc: "other path", a: ref(with(gw, ep("https://gw.example.com/one")), "b", "x"),
			b: ref(with(gw, ep("https://gw.example.com/two")), "b", "x"), want: false},
		{desc: "IP vs host name: not resolved (the worker's HEAD check catches it)", a: ref(gw, "b", "x"),
			b: ref(with(gw, ep("http://localhost:7070")), "b", "x"), want: false},
		{desc: "AWS commercial vs GovCloud", a: ref(aws("", "us-gov-west-1"), "b", "x"),
			b: ref(aws("", "us-west-1"), "b", "x"), want: false},
		{desc: "AWS vs China", a: ref(aws("https://s3.amazonaws.com", ""), "b", "x"),
			b: ref(aws("https://s3.cn-north-1.amazonaws.com.cn", ""), "b", "x"), want: false},
		{desc: "AWS vs an S3-compatible", a: ref(aws("", "us-east-1"), "b", "x"),
			b: ref(aws("https://nyc3.digitaloceanspaces.com", "us-east-1"), "b", "x"), want: false},
		{desc: "name only: other profile name", a: ref(objectid.Profile{Name: "default", NameOnly: true}, "b", "x"),
			b: ref(objectid.Profile{Name: "archive", NameOnly: true}, "b", "x"), want: false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got := objectid.Same(tc.a, tc.b)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Same(%s = %s, %s = %s) (-want +got):\n%s", tc.a, objectid.Of(tc.a), tc.b, objectid.Of(tc.b), diff)
			}
			if back := objectid.Same(tc.b, tc.a); back != got {
				t.Errorf("Same is not symmetric: %v one way, %v the other", got, back)
			}
		})
	}
}

func TestEndpoint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, url, region, want string
	}{
		{desc: "loopback with port", url: "http://127.0.0.1:7070/", want: "http://127.0.0.1:7070"},
		{desc: "default port dropped", url: "HTTPS://Minio.Example.com:443", want: "https://minio.example.com"},
		{desc: "IPv6", url: "http://[0::1]:80", want: "http://[::1]"},
		{desc: "AWS", url: "https://s3.dualstack.eu-west-1.amazonaws.com", want: "AWS S3 (partition aws)"},
		{desc: "AWS empty, GovCloud region", region: "us-gov-east-1", want: "AWS S3 (partition aws-us-gov)"},
		{desc: "not a URL", url: "not a url/", want: "not a url"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, objectid.Endpoint(tc.url, tc.region)); diff != "" {
				t.Errorf("Endpoint(%q, %q) (-want +got):\n%s", tc.url, tc.region, diff)
			}
		})
	}
}

func TestOverlap(t *testing.T) {
	t.Parallel()
	gw := objectid.Profile{Name: "default", EndpointURL: "http://127.0.0.1:7070"}
	archive := objectid.Profile{Name: "archive", EndpointURL: "http://127.0.0.1:7070/", Prefix: "archive"}
	other := objectid.Profile{Name: "other", EndpointURL: "http://127.0.0.1:7071"}
	for _, tc := range []struct {
		desc string
		a, b objectid.Ref
		want bool
	}{
		{desc: "one prefix inside the other", a: objectid.Ref{Profile: gw, Bucket: "b", Key: "photos/"},
			b: objectid.Ref{Profile: gw, Bucket: "b", Key: "photos/2019/"}, want: true},
		{desc: "through a profile prefix", a: objectid.Ref{Profile: gw, Bucket: "b", Key: ""},
			b: objectid.Ref{Profile: archive, Bucket: "b", Key: "photos/"}, want: true},
		{desc: "disjoint prefixes", a: objectid.Ref{Profile: gw, Bucket: "b", Key: "photos/"},
			b: objectid.Ref{Profile: archive, Bucket: "b", Key: "photos/"}, want: false},
		{desc: "other endpoint", a: objectid.Ref{Profile: gw, Bucket: "b", Key: "photos/"},
			b: objectid.Ref{Profile: other, Bucket: "b", Key: "photos/"}, want: false},
		{desc: "other bucket", a: objectid.Ref{Profile: gw, Bucket: "b", Key: "photos/"},
			b: objectid.Ref{Profile: gw, Bucket: "c", Key: "photos/"}, want: false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, objectid.Overlap(tc.a, tc.b)); diff != "" {
				t.Errorf("Overlap(%s, %s) (-want +got):\n%s", tc.a, tc.b, diff)
			}
		})
	}
}

// TestCheckDistinctMessage: the error names both spellings and the object.
func TestCheckDistinctMessage(t *testing.T) {
	t.Parallel()
	gw := objectid.Profile{Name: "default", EndpointURL: "http://127.0.0.1:7070"}
	archive := gw
	archive.Name, archive.Prefix = "archive", "archive/"
	err := objectid.CheckDistinct(objectid.Ref{Profile: gw, Bucket: "b", Key: "archive/x.txt"},
		objectid.Ref{Profile: archive, Bucket: "b", Key: "x.txt"})
	want := `s3://b/archive/x.txt via profile "default" and s3://b/x.txt via profile "archive" are the same object s3://b/archive/x.txt at http://127.0.0.1:7070`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("CheckDistinct = %v, want it to start with %q", err, want)
	}
	if err := objectid.CheckDistinct(objectid.Ref{Profile: gw, Bucket: "b", Key: "x.txt"},
		objectid.Ref{Profile: archive, Bucket: "b", Key: "x.txt"}); err != nil {
		t.Errorf("CheckDistinct of two objects = %v, want nil", err)
	}
}

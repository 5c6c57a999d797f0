// Package objectid decides whether two S3 locations are the same stored
// object. It is the one place that question is answered: the producer side
// (tasks, the CLI), storage and the worker all call it, so that a copy or a
// move onto itself is refused however its two ends are spelled.
//
// Production leaf used by tasks, storage and worker: it imports no ferry
// package.
//
// # What is compared
//
// An object is a (normalised endpoint, bucket, full key) triple. The full key
// is the profile's prefix (with the "/" storage adds) followed by the key.
// The endpoint is normalised without any network access:
//
//   - scheme and host are lower-cased, a trailing dot of the host dropped,
//     an IPv6 literal written canonically;
//   - the scheme's default port is dropped (80 for http, 443 for https);
//   - a trailing slash of the path is dropped (the SDK drops it too);
//   - every AWS S3 endpoint of a partition is one endpoint: an empty
//     endpoint URL (AWS at the profile's region), s3.amazonaws.com,
//     s3.<region>.amazonaws.com, s3-<region>.amazonaws.com,
//     s3.dualstack.<region>.amazonaws.com, FIPS and accelerate spellings,
//     http or https. Bucket names are unique within an AWS partition, so a
//     bucket reached through any region's endpoint is the same bucket; the
//     region only selects the partition (aws, aws-cn, aws-us-gov).
//
// # Considerations
//
// A host name and its IP address, a DNS alias or a proxy in front of a
// server are not recognised: telling them apart needs DNS or the server,
// and DNS answers change and one address may serve several services. For
// those spellings the worker's move has a last line of defence that asks the
// server (a HEAD of both ends after the copy, see worker.copyObject).
package objectid

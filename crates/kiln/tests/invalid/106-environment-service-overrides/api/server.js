// The api's release.

-- The modsecurity-crs pod's answer to an authorization check ModSecurity let through.
function allow(r)
  r.content_type = "text/plain"
  r:puts("allowed\n")
  return apache2.OK
end

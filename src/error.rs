//! Errors as the operator reads them: one line with every cause.

/// An error with its causes, `outer: inner: innermost`; a cause whose text the message
/// already holds (drivers often repeat their inner error in their own) is left out.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

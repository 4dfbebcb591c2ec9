#[cfg(test)]
mod refuse;

fn main() {}

//! `#[derive(Stats)]` for mmstats. Use it through `mmstats::Stats`; the
//! attributes are documented there.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitInt, LitStr};

/// Derives `mmstats::Stats` for a struct whose fields are metric handles.
#[proc_macro_derive(Stats, attributes(stat, stats))]
pub fn derive_stats(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "#[derive(Stats)] does not support generic structs",
        ));
    }
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(f) => &f.named,
            _ => {
                return Err(syn::Error::new_spanned(
                    name,
                    "#[derive(Stats)] needs a struct with named fields",
                ))
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                name,
                "#[derive(Stats)] needs a struct with named fields",
            ))
        }
    };

    let mut prefix = String::new();
    let mut model = name.to_string();
    // `#[stats(crate = "path")]` for a crate that re-exports mmstats, as
    // serde's `#[serde(crate = "...")]`.
    let mut krate: syn::Path = syn::parse_quote!(::mmstats);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("stats")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("prefix") {
                prefix = meta.value()?.parse::<LitStr>()?.value();
            } else if meta.path.is_ident("model") {
                model = meta.value()?.parse::<LitStr>()?.value();
                if model.is_empty() {
                    return Err(meta.error("model name must not be empty"));
                }
            } else if meta.path.is_ident("crate") {
                krate = meta.value()?.parse::<LitStr>()?.parse()?;
            } else {
                return Err(
                    meta.error("unknown #[stats] option; expected `prefix`, `model` or `crate`")
                );
            }
            Ok(())
        })?;
    }

    let mut defs = Vec::new();
    let mut binds = Vec::new();
    let mut labels: Vec<(String, Span)> = Vec::new();
    for field in fields {
        let ident = field.ident.as_ref().expect("named field");
        let ty = &field.ty;
        let mut label = ident.to_string();
        let mut unit: Option<String> = None;
        let mut precision: Option<LitInt> = None;
        let mut max_bits: Option<LitInt> = None;
        let mut label_span = ident.span();
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("stat")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("label") {
                    let lit = meta.value()?.parse::<LitStr>()?;
                    if lit.value().is_empty() {
                        return Err(syn::Error::new_spanned(&lit, "label must not be empty"));
                    }
                    label = lit.value();
                    label_span = lit.span();
                } else if meta.path.is_ident("unit") {
                    unit = Some(meta.value()?.parse::<LitStr>()?.value());
                } else if meta.path.is_ident("precision") {
                    precision = Some(meta.value()?.parse::<LitInt>()?);
                } else if meta.path.is_ident("max_bits") {
                    max_bits = Some(meta.value()?.parse::<LitInt>()?);
                } else {
                    return Err(meta.error(
                        "unknown #[stat] option; expected `label`, `unit`, `precision` or `max_bits`",
                    ));
                }
                Ok(())
            })?;
        }
        let full = format!("{prefix}{label}");
        if let Some((_, _)) = labels.iter().find(|(l, _)| *l == full) {
            return Err(syn::Error::new(
                label_span,
                format!("label {full:?} is used by another field of this model"),
            ));
        }
        labels.push((full.clone(), label_span));
        let help = doc_text(&field.attrs);
        let mut def = quote! {
            <#ty as #krate::StatField>::def(#full).help(#help)
        };
        if let Some(unit) = unit {
            def = quote! { #def.unit(#unit) };
        }
        match (precision, max_bits) {
            (None, None) => {}
            (p, m) => {
                let p = p.map_or(quote!(#krate::hist::DEFAULT_PRECISION), |p| quote!(#p));
                let m = match m {
                    Some(m) => quote!(#m),
                    None => quote!(<#ty as #krate::StatField>::def("").default_max_bits()),
                };
                def = quote! { #def.layout(#p, #m) };
            }
        }
        defs.push(quote! { schema.push(#def); });
        binds.push(quote! {
            #ident: <#ty as #krate::StatField>::bind(slots.next_slot()),
        });
    }

    Ok(quote! {
        impl #krate::Stats for #name {
            fn schema() -> #krate::Schema {
                let mut schema = #krate::Schema::new(#model);
                #(#defs)*
                schema
            }

            fn bind(slots: &mut #krate::__private::Slots) -> Self {
                #name {
                    #(#binds)*
                }
            }
        }
    })
}

/// The doc comment of a field, as one trimmed string.
fn doc_text(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
            {
                lines.push(s.value().trim().to_owned());
            }
        }
    }
    lines.join(" ").trim().to_owned()
}
